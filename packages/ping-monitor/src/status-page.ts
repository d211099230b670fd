import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import type { ServerResponse } from 'node:http'
import { fileURLToPath } from 'node:url'
import type { RouteHandler } from '@mtc/p2pnode'

/** The page's files: plain HTML, CSS and one script, served as they are (no build step). */
const FILES = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/status.js': { file: 'status.js', type: 'text/javascript; charset=utf-8' },
  '/status.css': { file: 'status.css', type: 'text/css; charset=utf-8' },
} as const

/**
 * Only our own files run and load: peer-provided text can never become script, even if
 * some rendering path forgot to escape it.
 */
const HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'",
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache',
}

/** static/ beside src/ (run from source) or beside dist/ (run built). */
function staticDir(): string {
  for (const rel of ['../static/', '../../static/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url))
    if (existsSync(`${dir}index.html`)) return dir
  }
  throw new Error('the status page files (packages/ping-monitor/static) are missing')
}

/** The status page's routes; the files are read once, at start. */
export async function statusPageRoutes(): Promise<Record<string, RouteHandler>> {
  const dir = staticDir()
  const routes: Record<string, RouteHandler> = {}
  for (const [path, { file, type }] of Object.entries(FILES)) {
    const body = await readFile(`${dir}${file}`)
    routes[path] = (_req, res: ServerResponse) => {
      res.writeHead(200, { ...HEADERS, 'content-type': type })
      res.end(body)
    }
  }
  return routes
}
