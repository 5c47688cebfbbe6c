// Keeps URL fetches Spool makes on a user's behalf (audio `body.file` URLs,
// webhook deliveries) away from the machine's own network: loopback, private
// ranges, link-local (cloud metadata at 169.254.169.254 / fd00:ec2::254) and
// every other address that is not public unicast, unless the operator
// allowlists it.
//
// The check sits inside the connection itself: the connector refuses IP
// literals (net.connect never calls `lookup` for those) and the `lookup` it
// hands to net/tls.connect resolves the name, checks every address and only
// then passes them on, so the address checked is the address connected to
// (no DNS-rebinding window). Redirects are followed by hand, each hop through
// the same connector.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP, isIPv4, isIPv6, type LookupFunction } from 'node:net';
import { domainToASCII } from 'node:url';
import { Agent, buildConnector, request } from 'undici';

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

function normalizeHostname(host: string): string {
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

// ------------------------------------------------------------------ policy

export interface NetworkPolicy {
  /** Skip the address check altogether (schemes and redirect limits still apply). Default false. */
  allowPrivateNetworks?: boolean;
  /** `audio.allowedHosts` entries; a matching host or address skips the non-public-address refusal. */
  allowedHosts?: readonly string[];
}

export type GuardedFetchErrorCode = 'blocked_address' | 'bad_scheme' | 'bad_redirect' | 'too_many_redirects' | 'too_large';

export class GuardedFetchError extends Error {
  override name = 'GuardedFetchError';
  constructor(
    readonly code: GuardedFetchErrorCode,
    message: string,
    /** The host refused, for 'blocked_address'. */
    readonly host?: string,
    /** The address it resolved to (or the literal itself), for 'blocked_address'. Kept out of the message. */
    readonly address?: string,
    readonly kind?: AddressKind,
  ) {
    super(message);
  }
}

/**
 * Checks the addresses `hostname` resolved to (or the literal it is). Returns the refusal, or undefined when
 * connecting is fine: the policy allows private networks, the host is allowlisted by name, or every address is
 * public or allowlisted. One refused address refuses the host.
 */
export function checkAddresses(hostname: string, addresses: readonly string[], policy: CompiledPolicy): GuardedFetchError | undefined {
  if (policy.allowPrivateNetworks) return undefined;
  if (hostMatchesAllowList(hostname, policy.entries)) return undefined;
  for (const address of addresses) {
    const kind = classifyAddress(address);
    if (kind === 'public' || addressMatchesAllowList(address, policy.entries)) continue;
    const host = normalizeHostname(hostname);
    const what = kind === 'invalid' ? 'an unparseable address' : `a ${kind} address`;
    return new GuardedFetchError(
      'blocked_address',
      `host "${host}" ${parseIp(host) ? 'is' : 'resolves to'} ${what}, and only public addresses are fetched from`,
      host,
      address,
      kind,
    );
  }
  return undefined;
}

export interface CompiledPolicy {
  allowPrivateNetworks: boolean;
  entries: AllowEntry[];
}

export function compilePolicy(policy: NetworkPolicy = {}): CompiledPolicy {
  return { allowPrivateNetworks: policy.allowPrivateNetworks ?? false, entries: (policy.allowedHosts ?? []).map(parseAllowEntry) };
}

// ------------------------------------------------------------------ fetching

/** Resolves a hostname to every address it has (dns.lookup with all: true by default). */
export type Resolver = (hostname: string, options: { family?: number | 'IPv4' | 'IPv6'; hints?: number }) => Promise<LookupAddress[]>;

const systemResolver: Resolver = (hostname, options) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { family: options.family as number | undefined, hints: options.hints, all: true }, (err, addresses) =>
      err ? reject(err) : resolve(addresses),
    );
  });

export interface GuardedFetchOptions extends NetworkPolicy {
  signal?: AbortSignal;
  /** Largest body read; a bigger one (by content-length or as it streams) throws 'too_large'. */
  maxBytes: number;
  /** Default 5. */
  maxRedirects?: number;
  headers?: Record<string, string>;
  /** Name resolution; the system's (dns.lookup) by default. Every address it returns is checked. */
  resolve?: Resolver;
  /** Default GET. A POST is never redirected: where a Location points is not where the sender agreed to post. */
  method?: 'GET' | 'POST';
  /** The request body (POST). */
  body?: string | Buffer;
  /** Answer as soon as the status is known, with no body read (bytes empty): for callers that only need the status. */
  skipBody?: boolean;
}

export interface GuardedFetchResult {
  /** The URL of the last hop (after redirects). */
  url: string;
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** The body when status is 200; empty otherwise (other bodies are discarded unread). */
  bytes: Buffer;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * GETs (or POSTs to) an http(s) URL the guarded way: only http and https, redirects followed by hand (at most
 * `maxRedirects`, each hop checked), every connection refused when its host resolves to an address the
 * policy does not allow, the body capped at `maxBytes`. Refusals and limits throw GuardedFetchError;
 * network failures throw what undici threw.
 */
export async function guardedFetch(url: string, options: GuardedFetchOptions): Promise<GuardedFetchResult> {
  const policy = compilePolicy(options);
  const maxRedirects = options.maxRedirects ?? 5;
  const resolve = options.resolve ?? systemResolver;
  // The refusal, kept here too in case a layer between the connector and us re-wraps the error.
  let refusal: GuardedFetchError | undefined;

  const lookup: LookupFunction = (hostname, lookupOptions, callback) => {
    resolve(hostname, { family: lookupOptions.family, hints: lookupOptions.hints }).then(
      (addresses) => {
        if (addresses.length === 0) {
          callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }), '', 0);
          return;
        }
        const blocked = checkAddresses(
          hostname,
          addresses.map((a) => a.address),
          policy,
        );
        if (blocked) {
          refusal = blocked;
          callback(blocked, '', 0);
        } else if (lookupOptions.all) callback(null, addresses);
        else callback(null, addresses[0].address, addresses[0].family);
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
  const connectWithLookup = buildConnector({ lookup });
  const agent = new Agent({
    connect(connectOptions, callback) {
      // net.connect skips `lookup` for IP literals, so those are checked here.
      const host = normalizeHostname(connectOptions.hostname);
      if (isIP(host)) {
        const blocked = checkAddresses(host, [host], policy);
        if (blocked) {
          refusal = blocked;
          callback(blocked, null);
          return;
        }
      }
      connectWithLookup(connectOptions, callback);
    },
  });

  try {
    let current = checkScheme(url);
    for (let hop = 0; ; hop++) {
      let response;
      try {
        response = await request(current, {
          method: options.method ?? 'GET',
          dispatcher: agent,
          signal: options.signal,
          headers: options.headers,
          body: options.body,
        });
      } catch (err) {
        throw refusal ?? err;
      }
      const { statusCode, headers, body } = response;
      // undici's body emits 'error' (aborted) when destroyed unread; iteration below still sees real errors.
      body.on('error', () => undefined);
      if (REDIRECT_STATUSES.has(statusCode)) {
        body.destroy();
        if (options.method === 'POST') throw new GuardedFetchError('bad_redirect', `HTTP ${statusCode} redirect: a POST is not redirected`);
        const location = Array.isArray(headers.location) ? headers.location[0] : headers.location;
        if (!location) throw new GuardedFetchError('bad_redirect', `HTTP ${statusCode} redirect without a Location header`);
        if (hop >= maxRedirects) throw new GuardedFetchError('too_many_redirects', `more than ${maxRedirects} redirects`);
        let next: URL;
        try {
          next = new URL(location, current);
        } catch {
          throw new GuardedFetchError('bad_redirect', `HTTP ${statusCode} redirect to an invalid URL`);
        }
        current = checkScheme(next.href);
        continue;
      }
      if (statusCode !== 200 || options.skipBody) {
        body.destroy();
        return { url: current.href, status: statusCode, headers, bytes: Buffer.alloc(0) };
      }
      const declared = Number(headers['content-length']);
      if (Number.isFinite(declared) && declared > options.maxBytes) {
        body.destroy();
        throw new GuardedFetchError('too_large', `larger than ${options.maxBytes} bytes`);
      }
      const chunks: Buffer[] = [];
      let size = 0;
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          size += chunk.length;
          if (size > options.maxBytes) throw new GuardedFetchError('too_large', `larger than ${options.maxBytes} bytes`);
          chunks.push(chunk);
        }
      } finally {
        if (!body.destroyed) body.destroy();
      }
      return { url: current.href, status: statusCode, headers, bytes: Buffer.concat(chunks) };
    }
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}

function checkScheme(href: string): URL {
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    throw new GuardedFetchError('bad_scheme', 'not a valid URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new GuardedFetchError('bad_scheme', `only http and https URLs are fetched, not ${url.protocol.slice(0, -1)}`);
  }
  return url;
}
