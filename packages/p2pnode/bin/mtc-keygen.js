#!/usr/bin/env node
import '../dist/src/keygen-bin.js'
