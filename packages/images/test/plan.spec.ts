import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type FileOwner, IDENTITY_FILE, PlanError, PROXY_UID, PSK_FILE, plan } from '../src/plan.ts'

const ENV = {
  PROXY_PORT: '4200',
  PROXY_IP: '10.0.0.5',
  SERVICE_PORT: '8080',
  SERVICE_NAME: 'hello',
  METRICS_PORT: '9200',
  P2P_BOOTSTRAPS: '/ip4/10.0.0.1/tcp/4001/p2p/12D3KooW',
  PATH: '/usr/bin',
}
/** Key files as the allocator mounts them: written 0600 by the allocator's user (here 1000). */
const KEY: FileOwner = { uid: 1000, gid: 1000, mode: 0o100600 }
const SECRETS = '/dev/shm/mtc-proxy-test'
const OPTIONS = {
  command: ['node', '/app/server.mjs'],
  execPath: '/usr/local/bin/node',
  stat: (p: string): FileOwner | undefined =>
    p === PSK_FILE || p === IDENTITY_FILE ? KEY : undefined,
  uid: 0,
  noNewPrivs: true,
  secretsDir: SECRETS,
}

test('the proxy runs in service mode as its own user, with private copies of the key files', () => {
  const p = plan(ENV, OPTIONS)
  assert.equal(p.proxy.file, '/usr/local/bin/node')
  assert.deepEqual([p.proxy.uid, p.proxy.gid], [PROXY_UID, PROXY_UID])
  assert.deepEqual(p.secrets, [
    { from: PSK_FILE, to: `${SECRETS}/swarm.key` },
    { from: IDENTITY_FILE, to: `${SECRETS}/identity.key` },
  ])
  assert.deepEqual(p.notices, [])
  assert.deepEqual(p.proxy.args, [
    '/mtc/proxy.mjs',
    '--psk-file',
    `${SECRETS}/swarm.key`,
    '--key-file',
    `${SECRETS}/identity.key`,
    '--metrics',
    '0.0.0.0:9200',
    '--listen',
    '/ip4/10.0.0.5/tcp/0',
    '4200',
    'hello',
    '127.0.0.1:8080',
  ])
  assert.equal(p.proxy.env.P2P_BOOTSTRAPS, ENV.P2P_BOOTSTRAPS)
})

test('the overlay listens on P2P_PORT when the allocator gives one', () => {
  const p = plan({ ...ENV, P2P_PORT: '20003' }, OPTIONS)
  assert.ok(p.proxy.args.includes('/ip4/10.0.0.5/tcp/20003'), p.proxy.args.join(' '))
  assert.throws(() => plan({ ...ENV, P2P_PORT: 'x' }, OPTIONS), /P2P_PORT="x" is not a TCP port/)
})

test('the service gets the environment, SERVICE_HOST and an unprivileged user', () => {
  const p = plan({ ...ENV, P2P_PSK: 'secret', P2P_PSK_FILE: '/x' }, OPTIONS)
  assert.equal(p.service.file, 'node')
  assert.deepEqual(p.service.args, ['/app/server.mjs'])
  assert.equal(p.service.env.SERVICE_PORT, '8080')
  assert.equal(p.service.env.PROXY_PORT, '4200')
  assert.equal(p.service.env.SERVICE_HOST, '127.0.0.1')
  assert.equal(p.service.env.P2P_PSK, undefined)
  assert.equal(p.service.env.P2P_PSK_FILE, undefined)
  assert.equal(p.proxy.env.P2P_PSK, undefined)
  assert.deepEqual([p.service.uid, p.service.gid], [65534, 65534])
  const custom = plan({ ...ENV, MTC_SERVICE_USER: '2000:2001' }, OPTIONS)
  assert.deepEqual([custom.service.uid, custom.service.gid], [2000, 2001])
})

test('the service never runs as root: MTC_SERVICE_USER=0 gets the default user and a log line', () => {
  for (const spec of ['0', '0:0', '0:1000', ' 0 ']) {
    const p = plan({ ...ENV, MTC_SERVICE_USER: spec }, OPTIONS)
    assert.deepEqual([p.service.uid, p.service.gid], [65534, 65534], spec)
    assert.equal(p.notices.length, 1)
    assert.match(p.notices[0], /asks for root; the service runs as 65534:65534 instead/)
  }
})

test('the service never runs as the proxy, nor as a user who could read the mounted keys', () => {
  const fails = (options: typeof OPTIONS, user: string, re: RegExp) =>
    assert.throws(
      () => plan({ ...ENV, MTC_SERVICE_USER: user }, options),
      (err: Error) => err instanceof PlanError && re.test(err.message),
    )
  fails(OPTIONS, String(PROXY_UID), /is the proxy's user \(65533\)/)
  // The key files' owner (the allocator's user, 1000), or their group when it may read.
  fails(
    OPTIONS,
    '1000',
    /user 1000:1000 could read \/run\/mtc\/swarm.key \(owner 1000:1000, mode 600\)/,
  )
  const groupReadable = { ...OPTIONS, stat: () => ({ ...KEY, mode: 0o100640 }) }
  fails(groupReadable, '3000:1000', /user 3000:1000 could read/)
  assert.equal(plan({ ...ENV, MTC_SERVICE_USER: '3000:3000' }, groupReadable).service.uid, 3000)
  // Readable by everyone: no user is safe.
  const everyone = { ...OPTIONS, stat: () => ({ ...KEY, mode: 0o100644 }) }
  fails(everyone, '65534', /swarm.key is readable by every user \(mode 644\): make it 0600/)
  // An identity file readable by the service is refused too.
  const identityOpen = {
    ...OPTIONS,
    stat: (p: string) => (p === IDENTITY_FILE ? { ...KEY, mode: 0o100604 } : KEY),
  }
  fails(identityOpen, '65534', /identity.key is readable by every user/)
})

test('the entrypoint must be root, with no_new_privs', () => {
  assert.throws(() => plan(ENV, { ...OPTIONS, uid: 1000 }), /runs as uid 1000, not root/)
  assert.throws(
    () => plan(ENV, { ...OPTIONS, noNewPrivs: false }),
    /no_new_privs is off.*--security-opt no-new-privileges/,
  )
})

test('optional parts: no identity file, no metrics port, IPv6, SERVICE_HOST', () => {
  const env = { ...ENV, PROXY_IP: 'fd00::5', SERVICE_HOST: '::1', METRICS_PORT: '' }
  const p = plan(env, { ...OPTIONS, stat: (f) => (f === PSK_FILE ? KEY : undefined) })
  assert.deepEqual(p.secrets, [{ from: PSK_FILE, to: `${SECRETS}/swarm.key` }])
  assert.deepEqual(p.proxy.args, [
    '/mtc/proxy.mjs',
    '--psk-file',
    `${SECRETS}/swarm.key`,
    '--listen',
    '/ip6/fd00::5/tcp/0',
    '4200',
    'hello',
    '[::1]:8080',
  ])
})

test('a bad configuration is one clear PlanError', () => {
  const fails = (env: NodeJS.ProcessEnv, re: RegExp, options = OPTIONS) =>
    assert.throws(
      () => plan(env, options),
      (err: Error) => err instanceof PlanError && re.test(err.message),
    )
  fails(
    { ...ENV, SERVICE_PORT: undefined, P2P_BOOTSTRAPS: ' ' },
    /missing environment: SERVICE_PORT, P2P_BOOTSTRAPS/,
  )
  fails({ ...ENV, PROXY_PORT: '70000' }, /PROXY_PORT="70000" is not a TCP port/)
  fails({ ...ENV, METRICS_PORT: 'x' }, /METRICS_PORT="x"/)
  fails({ ...ENV, PROXY_IP: 'example.org' }, /PROXY_IP="example.org" is not an IP address/)
  fails({ ...ENV, MTC_SERVICE_USER: 'nobody' }, /MTC_SERVICE_USER="nobody" is not UID\[:GID\]/)
  fails(ENV, /no service command/, { ...OPTIONS, command: [] })
  fails(ENV, /\/run\/mtc\/swarm.key is missing/, { ...OPTIONS, stat: () => undefined })
  fails({ ...ENV, MTC_SERVICE_USER: '99999999999' }, /is not UID\[:GID\]/)
})
