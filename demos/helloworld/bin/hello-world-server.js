#!/usr/bin/env node
import '../dist/src/hello-world-server.js'
