#!/usr/bin/env node
// The bundle `pnpm build` makes of dist/src/bin.js (scripts/bundle.ts says why); it
// re-executes with the daemon's memory settings first thing.
import '../dist/proxy.mjs'
