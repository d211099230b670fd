import assert from 'node:assert/strict'
import { test } from 'node:test'
import { IDENTITY_FILE, PlanError, PSK_FILE, plan } from '../src/plan.ts'

const ENV = {
  PROXY_PORT: '4200',
  PROXY_IP: '10.0.0.5',
  SERVICE_PORT: '8080',
  SERVICE_NAME: 'hello',
  METRICS_PORT: '9200',
  P2P_BOOTSTRAPS: '/ip4/10.0.0.1/tcp/4001/p2p/12D3KooW',
  PATH: '/usr/bin',
}
const OPTIONS = {
  command: ['node', '/app/server.mjs'],
  execPath: '/usr/local/bin/node',
  exists: (p: string): boolean => p === PSK_FILE || p === IDENTITY_FILE,
  uid: 0,
}

test('the proxy runs in service mode with the key files and the metrics port', () => {
  const p = plan(ENV, OPTIONS)
  assert.equal(p.proxy.file, '/usr/local/bin/node')
  assert.deepEqual(p.proxy.args, [
    '/mtc/proxy.mjs',
    '--psk-file',
    PSK_FILE,
    '--key-file',
    IDENTITY_FILE,
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
  const root = plan({ ...ENV, MTC_SERVICE_USER: '0' }, OPTIONS)
  assert.deepEqual([root.service.uid, root.service.gid], [undefined, undefined])
  const custom = plan({ ...ENV, MTC_SERVICE_USER: '1000:1001' }, OPTIONS)
  assert.deepEqual([custom.service.uid, custom.service.gid], [1000, 1001])
  const notRoot = plan(ENV, { ...OPTIONS, uid: 1000 })
  assert.equal(notRoot.service.uid, undefined)
})

test('optional parts: no identity file, no metrics port, IPv6, SERVICE_HOST', () => {
  const env = { ...ENV, PROXY_IP: 'fd00::5', SERVICE_HOST: '::1', METRICS_PORT: '' }
  const p = plan(env, { ...OPTIONS, exists: (f) => f === PSK_FILE })
  assert.deepEqual(p.proxy.args, [
    '/mtc/proxy.mjs',
    '--psk-file',
    PSK_FILE,
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
  fails(ENV, /\/run\/mtc\/swarm.key is missing/, { ...OPTIONS, exists: () => false })
})
