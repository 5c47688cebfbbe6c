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
import { isIP, type LookupFunction } from 'node:net';
import { Agent, buildConnector, request } from 'undici';
import {
  addressMatchesAllowList,
  classifyAddress,
  hostMatchesAllowList,
  normalizeHostname,
  parseAllowEntry,
  parseIp,
  type AddressKind,
  type AllowEntry,
} from '../net/address-policy.ts';

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
