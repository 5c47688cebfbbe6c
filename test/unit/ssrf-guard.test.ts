import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config.ts';
import { AudioSourceError, loadAudio, MAX_AUDIO_BYTES, type LoadAudioOptions } from '../../src/upstreams/audio-source.ts';
import {
  addressMatchesAllowList,
  allowEntryError,
  classifyAddress,
  hostMatchesAllowList,
  parseAllowEntry,
  parseIp,
  type AddressKind,
} from '../../src/net/address-policy.ts';
import {
  checkAddresses,
  compilePolicy,
  GuardedFetchError,
  guardedFetch,
  type Resolver,
} from '../../src/upstreams/ssrf-guard.ts';

describe('classifyAddress', () => {
  const cases: [string, AddressKind][] = [
    // IPv4
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['93.184.216.34', 'public'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'reserved'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['10.255.255.255', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.15.255.255', 'public'],
    ['172.32.0.0', 'public'],
    ['192.168.1.1', 'private'],
    ['192.169.0.1', 'public'],
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['100.64.0.1', 'cgnat'],
    ['100.127.255.255', 'cgnat'],
    ['100.63.255.255', 'public'],
    ['100.128.0.0', 'public'],
    ['192.0.0.170', 'reserved'],
    ['192.0.2.1', 'documentation'],
    ['198.18.0.1', 'reserved'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    // IPv6
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fc00::1', 'private'],
    ['fd12:3456:789a::1', 'private'],
    ['fd00:ec2::254', 'private'],
    ['fec0::1', 'private'],
    ['ff02::1', 'multicast'],
    ['ff05::1:3', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['2001:0:4136:e378::1', 'reserved'], // Teredo
    ['100::1', 'reserved'],
    ['::127.0.0.1', 'reserved'], // IPv4-compatible (deprecated)
    ['4000::1', 'reserved'], // outside 2000::/3
    ['2606:4700:4700::1111', 'public'],
    ['2a00:1450:4001:80e::200e', 'public'],
    // IPv4-mapped and embedding forms take the IPv4 address's kind
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['0:0:0:0:0:ffff:169.254.169.254', 'link-local'],
    ['::ffff:a9fe:a9fe', 'link-local'],
    ['::ffff:10.1.2.3', 'private'],
    ['::ffff:0.0.0.0', 'unspecified'],
    ['::ffff:8.8.8.8', 'public'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['64:ff9b:1::1', 'private'],
    ['2002:7f00:1::1', 'loopback'], // 6to4 of 127.0.0.1
    ['2002:a9fe:a9fe::', 'link-local'],
    ['2002:808:808::1', 'public'],
    // not addresses
    ['example.com', 'invalid'],
    ['localhost', 'invalid'],
    ['1.2.3', 'invalid'],
    ['01.2.3.4', 'invalid'],
    ['256.1.1.1', 'invalid'],
    ['::g', 'invalid'],
    ['', 'invalid'],
  ];
  for (const [address, kind] of cases) {
    it(`${address || '(empty)'} is ${kind}`, () => assert.equal(classifyAddress(address), kind));
  }

  it('classifies hosts the way the URL parser normalizes them (decimal, hex, octal, short and mapped forms)', () => {
    const hosts: [string, AddressKind][] = [
      ['http://2130706433/', 'loopback'],
      ['http://0x7f000001/', 'loopback'],
      ['http://0x7f.0.0.1/', 'loopback'],
      ['http://0177.0.0.1/', 'loopback'],
      ['http://127.1/', 'loopback'],
      ['http://0/', 'unspecified'],
      ['http://2852039166/', 'link-local'], // 169.254.169.254
      ['http://0xa9.0xfe.0xa9.0xfe/', 'link-local'],
      ['http://012.0.0.1/', 'private'], // 10.0.0.1
      ['http://[::ffff:127.0.0.1]/', 'loopback'],
      ['http://[0:0:0:0:0:ffff:a9fe:a9fe]/', 'link-local'],
      ['http://[fd00:ec2::254]/', 'private'],
      ['http://[::]/', 'unspecified'],
      ['http://8.8.8.8/', 'public'],
    ];
    for (const [url, kind] of hosts) assert.equal(classifyAddress(new URL(url).hostname), kind, url);
  });

  it('parses IPv6 with embedded IPv4 tails and zero runs', () => {
    assert.deepEqual(parseIp('::ffff:1.2.3.4')?.bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4]);
    assert.deepEqual(parseIp('1:2:3:4:5:6:1.2.3.4')?.bytes, [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 1, 2, 3, 4]);
    assert.deepEqual(parseIp('1::')?.bytes, [0, 1, ...Array<number>(14).fill(0)]);
    assert.deepEqual(parseIp('fe80::1%eth0')?.bytes, [0xfe, 0x80, ...Array<number>(13).fill(0), 1]);
    assert.deepEqual(parseIp('10.20.30.40'), { version: 4, bytes: [10, 20, 30, 40] });
  });
});

describe('allowlist', () => {
  const entries = (...list: string[]) => list.map(parseAllowEntry);

  it('rejects malformed entries with a reason', () => {
    for (const bad of ['10.0.0.0/33', '::/129', '10.0.0.0/8x', 'nope/8', 'bad host!', '*', '*.', '', 'a..b', '-x.example']) {
      assert.ok(allowEntryError(bad), `"${bad}" is rejected`);
      assert.throws(() => parseAllowEntry(bad), TypeError);
    }
    for (const good of ['localhost', 'media.internal', 'MEDIA.Internal.', '*.corp.example', '127.0.0.1', '::1', '[::1]', '10.0.0.0/8', 'fd00::/8', '0.0.0.0/0']) {
      assert.equal(allowEntryError(good), undefined, good);
    }
  });

  it('matches exact hostnames, case- and trailing-dot-insensitively', () => {
    const list = entries('Media.Internal.', 'localhost');
    assert.ok(hostMatchesAllowList('media.internal', list));
    assert.ok(hostMatchesAllowList('MEDIA.INTERNAL.', list));
    assert.ok(hostMatchesAllowList('localhost', list));
    assert.ok(!hostMatchesAllowList('a.media.internal', list));
    assert.ok(!hostMatchesAllowList('media.internal.evil.com', list));
    assert.ok(!hostMatchesAllowList('127.0.0.1', list), 'a hostname entry does not allowlist the address it resolves to');
  });

  it('matches *.suffix wildcards below the suffix only', () => {
    const list = entries('*.corp.example');
    assert.ok(hostMatchesAllowList('a.corp.example', list));
    assert.ok(hostMatchesAllowList('a.b.corp.example', list));
    assert.ok(!hostMatchesAllowList('corp.example', list));
    assert.ok(!hostMatchesAllowList('evilcorp.example', list));
    assert.ok(!hostMatchesAllowList('corp.example.evil.com', list));
  });

  it('matches internationalized names in their punycode form', () => {
    assert.ok(hostMatchesAllowList(new URL('http://bücher.example/').hostname, entries('bücher.example')));
  });

  it('matches IP entries, IPv4-mapped IPv6 included', () => {
    const list = entries('127.0.0.1', '::1');
    assert.ok(addressMatchesAllowList('127.0.0.1', list));
    assert.ok(addressMatchesAllowList('::ffff:127.0.0.1', list));
    assert.ok(addressMatchesAllowList('::1', list));
    assert.ok(!addressMatchesAllowList('127.0.0.2', list));
    assert.ok(!addressMatchesAllowList('::2', list));
    assert.ok(hostMatchesAllowList('127.0.0.1', list), 'an IP-literal host matches IP entries');
    assert.ok(hostMatchesAllowList('[::1]', list));
    assert.ok(addressMatchesAllowList('10.0.0.1', entries('::ffff:10.0.0.1')), 'a mapped entry is its IPv4 address');
  });

  it('matches IPv4 CIDRs at their boundaries', () => {
    const list = entries('10.0.0.0/8', '192.168.4.0/22', '127.0.0.0/8');
    assert.ok(addressMatchesAllowList('10.0.0.0', list));
    assert.ok(addressMatchesAllowList('10.255.255.255', list));
    assert.ok(!addressMatchesAllowList('11.0.0.0', list));
    assert.ok(addressMatchesAllowList('192.168.4.0', list));
    assert.ok(addressMatchesAllowList('192.168.7.255', list));
    assert.ok(!addressMatchesAllowList('192.168.8.0', list));
    assert.ok(!addressMatchesAllowList('192.168.3.255', list));
    assert.ok(addressMatchesAllowList('::ffff:127.0.0.53', list));
    assert.ok(addressMatchesAllowList('10.9.8.7', entries('::ffff:10.0.0.0/104')), 'a mapped CIDR is its IPv4 CIDR');
    assert.ok(addressMatchesAllowList('203.0.113.5', entries('0.0.0.0/0')));
    assert.ok(!addressMatchesAllowList('::1', entries('0.0.0.0/0')), 'IPv4 CIDRs never match IPv6 addresses');
  });

  it('matches IPv6 CIDRs at their boundaries', () => {
    const list = entries('fd00::/8', 'fe80::/10', '2001:db8:1::/48');
    assert.ok(addressMatchesAllowList('fd00:ec2::254', list));
    assert.ok(addressMatchesAllowList('fdff:ffff::1', list));
    assert.ok(!addressMatchesAllowList('fc00::1', list));
    assert.ok(addressMatchesAllowList('febf::1', list));
    assert.ok(!addressMatchesAllowList('fec0::1', list));
    assert.ok(addressMatchesAllowList('2001:db8:1:ffff::1', list));
    assert.ok(!addressMatchesAllowList('2001:db8:2::1', list));
    assert.ok(!addressMatchesAllowList('10.0.0.1', list));
  });

  it('checkAddresses refuses a host when any one of its addresses is refused', () => {
    const policy = compilePolicy({});
    assert.equal(checkAddresses('example.com', ['93.184.216.34', '2606:2800:220:1::1'], policy), undefined);
    const refused = checkAddresses('example.com', ['93.184.216.34', '10.0.0.1'], policy);
    assert.ok(refused instanceof GuardedFetchError);
    assert.equal(refused.code, 'blocked_address');
    assert.equal(refused.host, 'example.com');
    assert.equal(refused.address, '10.0.0.1');
    assert.equal(refused.kind, 'private');
    assert.ok(!refused.message.includes('10.0.0.1'), 'the resolved address stays out of the message users see');
    assert.equal(checkAddresses('example.com', ['93.184.216.34', '10.0.0.1'], compilePolicy({ allowedHosts: ['10.0.0.0/8'] })), undefined);
    assert.equal(checkAddresses('example.com', ['10.0.0.1'], compilePolicy({ allowedHosts: ['example.com'] })), undefined);
    assert.equal(checkAddresses('example.com', ['10.0.0.1', '::1'], compilePolicy({ allowPrivateNetworks: true })), undefined);
    assert.ok(checkAddresses('example.com', ['10.0.0.1', '::1'], compilePolicy({ allowedHosts: ['10.0.0.1'] })), '::1 is still refused');
  });
});

describe('audio config', () => {
  it('defaults to refusing private networks with an empty allowlist', () => {
    assert.deepEqual(parseConfig({}).audio, { allowPrivateNetworks: false, allowedHosts: [] });
  });

  it('takes every entry form and names a bad entry', () => {
    const entries = ['localhost', '*.corp.example', '127.0.0.1', '10.0.0.0/8', 'fd00::/8', '::1'];
    assert.deepEqual(parseConfig({ audio: { allowPrivateNetworks: true, allowedHosts: entries } }).audio, {
      allowPrivateNetworks: true,
      allowedHosts: entries,
    });
    assert.throws(() => parseConfig({ audio: { allowedHosts: ['ok.example', '10.0.0.0/40'] } }), (err: Error) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /audio\.allowedHosts\.1/);
      assert.match(err.message, /prefix length/);
      return true;
    });
    assert.throws(() => parseConfig({ audio: { allowedHost: [] } }), /unknown key/);
  });
});

// ------------------------------------------------------------------ real fetches

interface TestServer {
  url: string;
  port: number;
  hits: string[];
}

const servers: Server[] = [];
after(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void, host = '127.0.0.1'): Promise<TestServer> {
  const hits: string[] = [];
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, resolve);
  });
  servers.push(server);
  const { port } = server.address() as AddressInfo;
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, port, hits };
}

const AUDIO = Buffer.from('RIFF0000WAVEfmt audio bytes');
const noUploads = async () => undefined;

function audioHandler(req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': String(AUDIO.length) });
  res.end(AUDIO);
}

/** A resolver that answers from a fixed table instead of DNS. */
function fakeDns(table: Record<string, string[]>): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const resolve = async (hostname: string): Promise<LookupAddress[]> => {
    calls.push(hostname);
    const addresses = table[hostname];
    if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
    return addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  return Object.assign(resolve, { calls });
}

async function refused(url: string, options: LoadAudioOptions, host: string): Promise<void> {
  await assert.rejects(loadAudio(url, noUploads, options), (err: Error) => {
    assert.ok(err instanceof AudioSourceError, `${url}: ${err.name}: ${err.message}`);
    assert.match(err.message, /^Refused to fetch the audio/);
    assert.ok(err.message.includes(`"${host}"`), `the message names the host ${host}: ${err.message}`);
    assert.match(err.message, /audio\.allowedHosts/);
    return true;
  });
}

describe('loadAudio over http', () => {
  let audio: TestServer;
  before(async () => {
    audio = await serve(audioHandler);
  });

  it('refuses loopback by default, in every spelling, without ever connecting', async () => {
    const before = audio.hits.length;
    await refused(`${audio.url}/a.wav`, {}, '127.0.0.1');
    await refused(`http://localhost:${audio.port}/a.wav`, {}, 'localhost');
    await refused(`http://2130706433:${audio.port}/a.wav`, {}, '127.0.0.1');
    await refused(`http://0x7f.1:${audio.port}/a.wav`, {}, '127.0.0.1');
    await refused(`http://[::ffff:127.0.0.1]:${audio.port}/a.wav`, {}, '::ffff:7f00:1');
    await refused(`http://0.0.0.0:${audio.port}/a.wav`, {}, '0.0.0.0');
    await refused(`http://169.254.169.254/latest/meta-data/`, {}, '169.254.169.254');
    await refused(`http://[fd00:ec2::254]/latest/meta-data/`, {}, 'fd00:ec2::254');
    assert.equal(audio.hits.length, before, 'no request reached the server');
  });

  it('fetches from an allowlisted address, network or hostname', async () => {
    for (const allowedHosts of [['127.0.0.1'], ['127.0.0.0/8'], ['::ffff:127.0.0.1']]) {
      const got = await loadAudio(`${audio.url}/dir/clip.wav`, noUploads, { allowedHosts });
      assert.deepEqual(Buffer.from(got.bytes), AUDIO, JSON.stringify(allowedHosts));
      assert.equal(got.fileName, 'clip.wav');
      assert.equal(got.contentType, 'audio/wav');
    }
    const byName = await loadAudio(`http://localhost:${audio.port}/clip.wav`, noUploads, { allowedHosts: ['localhost'] });
    assert.deepEqual(Buffer.from(byName.bytes), AUDIO);
    const everything = await loadAudio(`${audio.url}/clip.wav`, noUploads, { allowPrivateNetworks: true });
    assert.deepEqual(Buffer.from(everything.bytes), AUDIO);
  });

  it('does not let an allowlisted hostname stand for other hosts at the same address', async () => {
    await refused(`${audio.url}/a.wav`, { allowedHosts: ['localhost'] }, '127.0.0.1');
    await refused(`http://localhost:${audio.port}/a.wav`, { allowedHosts: ['127.0.0.2', '*.localhost'] }, 'localhost');
  });

  it('checks every address a name resolves to, and connects only to the addresses it checked', async () => {
    const dns = fakeDns({
      'mixed.example': ['93.184.216.34', '10.0.0.7'],
      'meta.example': ['169.254.169.254'],
      'audio.example': ['127.0.0.1'],
    });
    await refused(`http://mixed.example:${audio.port}/a.wav`, { resolve: dns }, 'mixed.example');
    await refused(`http://meta.example/latest/meta-data/`, { resolve: dns }, 'meta.example');
    await refused(`http://audio.example:${audio.port}/a.wav`, { resolve: dns }, 'audio.example');
    // Allowlisted by address, or by wildcard: the connection goes to the address the resolver gave and the check saw.
    for (const allowedHosts of [['127.0.0.1'], ['*.example']]) {
      const hits = audio.hits.length;
      const got = await loadAudio(`http://audio.example:${audio.port}/clip.wav`, noUploads, { resolve: dns, allowedHosts });
      assert.deepEqual(Buffer.from(got.bytes), AUDIO);
      assert.equal(audio.hits.length, hits + 1);
    }
    assert.ok(dns.calls.includes('audio.example'));
  });

  it('refuses a redirect from an allowlisted server to a refused address', async () => {
    const target = await serve(audioHandler);
    const dns = fakeDns({ 'internal.example': ['10.1.2.3'], 'files.example': ['127.0.0.1'] });
    const redirector = await serve((req, res) => {
      const to: Record<string, string> = {
        '/to-loopback-ip': `${target.url}/clip.wav`,
        '/to-metadata': 'http://169.254.169.254/latest/meta-data/iam/',
        '/to-mapped': `http://[::ffff:a9fe:a9fe]/`,
        '/to-private-name': `http://internal.example:${target.port}/clip.wav`,
        '/to-relative': '/clip.wav',
      };
      if (req.url === '/clip.wav') return audioHandler(req, res);
      res.writeHead(req.url === '/to-metadata' ? 307 : 302, { location: to[req.url ?? ''] ?? '/nowhere' });
      res.end();
    });
    // Only the redirector's hostname is allowlisted; the hop to 127.0.0.1 (another port, same address) is refused.
    const options: LoadAudioOptions = { resolve: dns, allowedHosts: ['files.example'] };
    const from = `http://files.example:${redirector.port}`;
    await refused(`${from}/to-loopback-ip`, options, '127.0.0.1');
    await refused(`${from}/to-metadata`, options, '169.254.169.254');
    await refused(`${from}/to-mapped`, options, '::ffff:a9fe:a9fe');
    await refused(`${from}/to-private-name`, options, 'internal.example');
    assert.equal(target.hits.length, 0, 'no refused hop reached its server');
    // A redirect within the allowlisted host is followed.
    const relative = await loadAudio(`${from}/to-relative`, noUploads, options);
    assert.deepEqual(Buffer.from(relative.bytes), AUDIO);
    // An address-allowlisted redirector is not a pass for where it points either.
    await refused(`${redirector.url}/to-private-name`, { resolve: dns, allowedHosts: ['127.0.0.1'] }, 'internal.example');
  });

  it('follows at most 5 redirects, and only to http(s)', async () => {
    const chain = await serve((req, res) => {
      const m = /^\/hop\/(\d+)$/.exec(req.url ?? '');
      if (m && Number(m[1]) > 0) {
        res.writeHead(301, { location: `/hop/${Number(m[1]) - 1}` }).end();
        return;
      }
      if (req.url === '/to-file') return void res.writeHead(302, { location: 'file:///etc/passwd' }).end();
      if (req.url === '/no-location') return void res.writeHead(302).end();
      audioHandler(req, res);
    });
    const options: LoadAudioOptions = { allowedHosts: ['127.0.0.1'] };
    const five = await loadAudio(`${chain.url}/hop/5`, noUploads, options);
    assert.deepEqual(Buffer.from(five.bytes), AUDIO);
    await assert.rejects(loadAudio(`${chain.url}/hop/6`, noUploads, options), (err: Error) => {
      assert.ok(err instanceof AudioSourceError);
      assert.match(err.message, /more than 5 redirects/);
      return true;
    });
    await assert.rejects(loadAudio(`${chain.url}/to-file`, noUploads, options), /only http and https/);
    await assert.rejects(loadAudio(`${chain.url}/no-location`, noUploads, options), /without a Location/);
  });

  it('refuses non-http(s) schemes outright', async () => {
    for (const url of ['file:///etc/passwd', 'ftp://example.com/a.wav', 'gopher://127.0.0.1:6379/_INFO']) {
      await assert.rejects(loadAudio(url, noUploads, { allowPrivateNetworks: true }), (err: Error) => {
        assert.ok(err instanceof AudioSourceError, url);
        assert.match(err.message, /http or https/);
        return true;
      });
    }
    await assert.rejects(guardedFetch('ftp://example.com/', { maxBytes: 10 }), (err: Error) => err instanceof GuardedFetchError && err.code === 'bad_scheme');
  });

  it('still reads data: URLs and uploaded file ids under the default policy', async () => {
    const base64 = await loadAudio(`data:audio/wav;base64,${AUDIO.toString('base64')}`, noUploads);
    assert.deepEqual(Buffer.from(base64.bytes), AUDIO);
    assert.equal(base64.fileName, 'audio.wav');
    const plain = await loadAudio('data:audio/mpeg,hello%20there', noUploads);
    assert.equal(Buffer.from(plain.bytes).toString(), 'hello there');
    assert.equal(plain.fileName, 'audio.mp3');
    const uploaded = await loadAudio('file-abc', async (id) => (id === 'file-abc' ? { bytes: AUDIO, fileName: 'up.wav' } : undefined));
    assert.equal(uploaded.fileName, 'up.wav');
  });

  it('turns HTTP error statuses into AudioSourceErrors', async () => {
    const missing = await serve((_req, res) => void res.writeHead(404).end('no'));
    await assert.rejects(loadAudio(`${missing.url}/x.wav`, noUploads, { allowedHosts: ['127.0.0.1'] }), (err: Error) => {
      assert.ok(err instanceof AudioSourceError);
      assert.match(err.message, /HTTP 404/);
      return true;
    });
  });

  it('enforces the size limit, declared or streamed', async () => {
    const big = await serve((req, res) => {
      if (req.url === '/declared') {
        res.writeHead(200, { 'content-type': 'audio/wav', 'content-length': String(MAX_AUDIO_BYTES + 1) });
        res.end(Buffer.alloc(MAX_AUDIO_BYTES + 1));
        return;
      }
      // Chunked, no content-length: the limit has to be counted.
      res.writeHead(200, { 'content-type': 'audio/wav' });
      const chunk = Buffer.alloc(1024 * 1024);
      let sent = 0;
      const pump = () => {
        while (sent <= MAX_AUDIO_BYTES) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('error', () => undefined);
      pump();
    });
    for (const path of ['/declared', '/streamed']) {
      await assert.rejects(loadAudio(`${big.url}${path}`, noUploads, { allowedHosts: ['127.0.0.1'] }), (err: Error) => {
        assert.ok(err instanceof AudioSourceError, `${path}: ${err.message}`);
        assert.match(err.message, new RegExp(`larger than ${MAX_AUDIO_BYTES} bytes`));
        return true;
      });
    }
  });

  it('guardedFetch caps the body at exactly maxBytes', async () => {
    const ten = await serve((_req, res) => void res.writeHead(200).end(Buffer.alloc(10, 1)));
    const ok = await guardedFetch(`${ten.url}/`, { maxBytes: 10, allowedHosts: ['127.0.0.1'] });
    assert.equal(ok.status, 200);
    assert.equal(ok.bytes.length, 10);
    await assert.rejects(
      guardedFetch(`${ten.url}/`, { maxBytes: 9, allowedHosts: ['127.0.0.1'] }),
      (err: Error) => err instanceof GuardedFetchError && err.code === 'too_large',
    );
  });

  it('refuses IPv6 loopback by default and allows it when allowlisted', async (t) => {
    let v6: TestServer;
    try {
      v6 = await serve(audioHandler, '::1');
    } catch {
      t.skip('no IPv6 loopback here');
      return;
    }
    await refused(`${v6.url}/a.wav`, {}, '::1');
    const got = await loadAudio(`${v6.url}/a.wav`, noUploads, { allowedHosts: ['::1/128'] });
    assert.deepEqual(Buffer.from(got.bytes), AUDIO);
    assert.equal(v6.hits.length, 1);
  });
});
