#!/usr/bin/env node
// Runs the bundle `pnpm build` makes of dist/src/bin.js (scripts/bundle.ts says why), with
// V8's compile cache on (in os.tmpdir()): the next run skips compiling what it runs again,
// ~40 ms of CPU of a command's ~220.
import { enableCompileCache } from 'node:module'

enableCompileCache?.()
await import('../dist/bundle/hl-cli.mjs')
