#!/usr/bin/env node
// Re-executes with the daemon's memory settings (p2pnode/src/node-flags.ts) before loading.
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()
await import('../dist/src/daemon/bin.js')
