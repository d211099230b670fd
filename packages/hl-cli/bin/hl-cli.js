#!/usr/bin/env node
// Runs the bundle `pnpm build` makes of dist/src/bin.js (scripts/bundle.ts says why).
import '../dist/bundle/hl-cli.mjs'
