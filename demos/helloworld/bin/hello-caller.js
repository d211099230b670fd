#!/usr/bin/env node
import '../dist/src/hello-caller.js'
