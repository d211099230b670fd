#!/usr/bin/env node
// Re-executes with the daemon's memory settings before the bundle is even loaded, so the
// first process does not evaluate the whole libp2p stack for nothing; then runs the bundle
// `pnpm build` makes of dist/src/bin.js (scripts/bundle.ts says why).
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()
await import('../dist/proxy.mjs')
