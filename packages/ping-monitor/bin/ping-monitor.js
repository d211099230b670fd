#!/usr/bin/env node
// Re-executes with the daemon's Node flags (smaller V8 young generation) before loading.
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()
await import('../dist/src/bin.js')
