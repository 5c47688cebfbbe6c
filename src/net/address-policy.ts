// Address classification and allowlists for outbound fetches made on a user's
// behalf: what counts as a non-public address (loopback, private, link-local,
// metadata...), and how an operator's allowlist entries (hostnames, "*.suffix"
// wildcards, IPs, CIDRs) are parsed and matched. Pure functions: config
// validates allowlist entries with them, and the SSRF guard enforces them.
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

// ------------------------------------------------------------------ addresses

export interface ParsedIp {
  version: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: number[];
}

/** Parses an IPv4 or IPv6 literal ("[::1]" and zone ids "fe80::1%eth0" accepted); undefined when it is not one. */
export function parseIp(text: string): ParsedIp | undefined {
  let s = text.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone !== -1 && s.includes(':')) s = s.slice(0, zone);
  if (isIPv4(s)) return { version: 4, bytes: s.split('.').map(Number) };
  if (!isIPv6(s)) return undefined;
  return { version: 6, bytes: parseIPv6(s) };
}

function parseIPv6(s: string): number[] {
  let text = s.toLowerCase();
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    // An embedded dotted IPv4 tail ("::ffff:1.2.3.4") stands for the last two groups.
    tail.push(...text.slice(lastColon + 1).split('.').map(Number));
    text = text.slice(0, lastColon + 1);
    if (!text.endsWith('::')) text = text.slice(0, -1);
  }
  const groupsWanted = tail.length > 0 ? 6 : 8;
  const [head, rest] = text.includes('::') ? text.split('::') : [text, undefined];
  const toGroups = (part: string | undefined) => (part ? part.split(':').filter((g) => g !== '') : []);
  const headGroups = toGroups(head);
  const restGroups = toGroups(rest);
  const groups =
    rest === undefined
      ? headGroups
      : [...headGroups, ...Array<string>(groupsWanted - headGroups.length - restGroups.length).fill('0'), ...restGroups];
  const bytes: number[] = [];
  for (const group of groups.slice(0, groupsWanted)) {
    const value = parseInt(group, 16);
    bytes.push(value >> 8, value & 0xff);
  }
  bytes.push(...tail);
  return bytes;
}

/** IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes the IPv4 address it stands for; everything else is returned as is. */
export function unmapIp(ip: ParsedIp): ParsedIp {
  if (ip.version === 6 && ip.bytes.slice(0, 10).every((b) => b === 0) && ip.bytes[10] === 0xff && ip.bytes[11] === 0xff) {
    return { version: 4, bytes: ip.bytes.slice(12) };
  }
  return ip;
}

function inPrefix(ip: ParsedIp, network: ParsedIp, prefix: number): boolean {
  if (ip.version !== network.version) return false;
  let bits = prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((ip.bytes[i] & mask) !== (network.bytes[i] & mask)) return false;
  }
  return true;
}

export type AddressKind =
  | 'public'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'cgnat'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'reserved'
  /** Not an IP address at all. */
  | 'invalid';

type RangeKind = Exclude<AddressKind, 'invalid'> | 'embedded-ipv4';

function ranges(table: [string, RangeKind][]): { network: ParsedIp; prefix: number; kind: RangeKind }[] {
  return table.map(([cidr, kind]) => {
    const [address, prefix] = cidr.split('/');
    return { network: parseIp(address)!, prefix: Number(prefix), kind };
  });
}

// First match wins, so narrower ranges come before the ranges holding them.
const IPV4_RANGES = ranges([
  ['0.0.0.0/32', 'unspecified'],
  ['0.0.0.0/8', 'reserved'], // "this network"; Linux connects 0.x to the local host
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local'], // incl. 169.254.169.254, cloud metadata
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'], // IETF protocol assignments
  ['192.0.2.0/24', 'documentation'],
  ['192.88.99.0/24', 'reserved'], // 6to4 relay anycast (deprecated)
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'reserved'], // benchmarking
  ['198.51.100.0/24', 'documentation'],
  ['203.0.113.0/24', 'documentation'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved'],
]);

const IPV6_RANGES = ranges([
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['64:ff9b::/96', 'embedded-ipv4'], // NAT64 well-known prefix: the IPv4 address decides
  ['64:ff9b:1::/48', 'private'], // local-use NAT64
  ['::/8', 'reserved'], // incl. IPv4-compatible ::a.b.c.d (mapped ::ffff:0:0/96 is unmapped before this)
  ['100::/64', 'reserved'], // discard-only
  ['2001:db8::/32', 'documentation'],
  ['2001::/23', 'reserved'], // IETF protocol assignments, Teredo
  ['2002::/16', 'embedded-ipv4'], // 6to4: the IPv4 address decides
  ['3fff::/20', 'documentation'],
  ['2000::/3', 'public'], // global unicast
  ['fc00::/7', 'private'], // unique local, incl. fd00:ec2::254 (AWS metadata)
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'private'], // site-local (deprecated)
  ['ff00::/8', 'multicast'],
  ['::/0', 'reserved'], // unallocated
]);

/** What kind of address `address` (an IPv4 or IPv6 literal) is; only 'public' ones are fetched from by default. */
export function classifyAddress(address: string | ParsedIp): AddressKind {
  const parsed = typeof address === 'string' ? parseIp(address) : address;
  if (!parsed) return 'invalid';
  const ip = unmapIp(parsed);
  if (ip.version === 4) return (IPV4_RANGES.find((r) => inPrefix(ip, r.network, r.prefix))?.kind as AddressKind | undefined) ?? 'public';
  const range = IPV6_RANGES.find((r) => inPrefix(ip, r.network, r.prefix))!;
  if (range.kind !== 'embedded-ipv4') return range.kind;
  const embedded = range.prefix === 16 ? ip.bytes.slice(2, 6) : ip.bytes.slice(12, 16);
  return classifyAddress({ version: 4, bytes: embedded });
}

// ------------------------------------------------------------------ allowlist

export type AllowEntry =
  | { kind: 'host'; host: string }
  /** `*.example.com`: any name below example.com, not example.com itself. */
  | { kind: 'suffix'; suffix: string }
  | { kind: 'network'; network: ParsedIp; prefix: number };

export function normalizeHostname(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

/**
 * Parses one `audio.allowedHosts` entry: an exact hostname ("media.internal"), a wildcard ("*.corp.example"),
 * an IP address ("10.1.2.3", "::1") or a CIDR ("10.0.0.0/8", "fd00::/8"). Throws a TypeError saying what is wrong.
 */
export function parseAllowEntry(entry: string): AllowEntry {
  const text = entry.trim();
  const slash = text.indexOf('/');
  if (slash !== -1) {
    const ip = parseIp(text.slice(0, slash));
    const prefixText = text.slice(slash + 1);
    if (!ip) throw new TypeError(`"${entry}" is not a CIDR: "${text.slice(0, slash)}" is not an IP address`);
    const max = ip.version === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) {
      throw new TypeError(`"${entry}" is not a CIDR: the prefix length must be 0 to ${max}`);
    }
    let prefix = Number(prefixText);
    let network = ip;
    // ::ffff:10.0.0.0/104 means 10.0.0.0/8: addresses are unmapped before they are matched.
    const unmapped = unmapIp(ip);
    if (unmapped.version === 4 && ip.version === 6 && prefix >= 96) {
      network = unmapped;
      prefix -= 96;
    }
    return { kind: 'network', network, prefix };
  }
  const ip = parseIp(text);
  if (ip) {
    const unmapped = unmapIp(ip);
    return { kind: 'network', network: unmapped, prefix: unmapped.version === 4 ? 32 : 128 };
  }
  const wildcard = text.startsWith('*.');
  const name = domainToASCII(normalizeHostname(wildcard ? text.slice(2) : text));
  if (!name || !HOSTNAME.test(name)) {
    throw new TypeError(`"${entry}" is not a hostname, "*.suffix" wildcard, IP address or CIDR`);
  }
  return wildcard ? { kind: 'suffix', suffix: `.${name}` } : { kind: 'host', host: name };
}

/** Why `entry` is not a valid allowlist entry, or undefined when it is (for config validation). */
export function allowEntryError(entry: string): string | undefined {
  try {
    parseAllowEntry(entry);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Whether `hostname` (as a URL spells it) is allowlisted by name: an exact entry or a wildcard. */
export function hostMatchesAllowList(hostname: string, entries: readonly AllowEntry[]): boolean {
  const host = normalizeHostname(hostname);
  if (parseIp(host)) return addressMatchesAllowList(host, entries);
  return entries.some((e) => (e.kind === 'host' && e.host === host) || (e.kind === 'suffix' && host.endsWith(e.suffix)));
}

/** Whether the IP address `address` is allowlisted by an IP or CIDR entry (IPv4-mapped IPv6 matches the IPv4 entries). */
export function addressMatchesAllowList(address: string | ParsedIp, entries: readonly AllowEntry[]): boolean {
  const parsed = typeof address === 'string' ? parseIp(address) : address;
  if (!parsed) return false;
  const ip = unmapIp(parsed);
  return entries.some((e) => e.kind === 'network' && inPrefix(ip, e.network, e.prefix));
}
