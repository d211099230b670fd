import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { defaultLogger } from '@libp2p/logger'
import { generatePsk, MeshNode } from '@mtc/p2pnode'
import { REQUIREMENTS_FIRST_WAIT_MS } from '../src/constants.ts'
import { RegistryRequirements } from '../src/registry-requirements.ts'

describe('registry requirements while no registry can be found', () => {
  let node: MeshNode
  let source: RegistryRequirements

  before(async () => {
    node = await MeshNode.create({
      role: 'test',
      version: '0',
      listen: [],
      bootstraps: [],
      psk: generatePsk(),
    })
    await node.start()
    source = new RegistryRequirements({
      libp2p: node.libp2p,
      log: defaultLogger().forComponent('test'),
    })
    source.start()
  })

  after(async () => {
    await source.stop()
    await node.stop()
  })

  it("only a service's first request waits; the next ones use --config's limits at once", async () => {
    const t0 = performance.now()
    assert.equal(await source.get('svc'), undefined)
    const first = performance.now() - t0
    assert.ok(first >= REQUIREMENTS_FIRST_WAIT_MS * 0.9, `first request waited ${first} ms`)
    const t1 = performance.now()
    const next = await Promise.all(Array.from({ length: 20 }, () => source.get('svc')))
    const dt = performance.now() - t1
    assert.deepEqual(next, Array(20).fill(undefined))
    assert.ok(dt < REQUIREMENTS_FIRST_WAIT_MS / 4, `later requests waited ${dt} ms`)
  })
})
