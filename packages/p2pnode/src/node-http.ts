import { createRequire } from 'node:module'

/**
 * Node's `http` module, loaded with require(). An ESM `import ... from 'node:http'`
 * builds the module's namespace, which reads its lazy WebSocket/CloseEvent/MessageEvent
 * exports and so loads undici: ~12 MB more RSS for code no daemon uses. Import values
 * from here; type-only imports from 'node:http' are erased and cost nothing.
 */
export const http: typeof import('node:http') = createRequire(import.meta.url)('node:http')
