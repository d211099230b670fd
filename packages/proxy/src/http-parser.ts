import { createRequire } from 'node:module'

/**
 * Node's own HTTP parser (llhttp, compiled into Node, strict by default): the binding Node's
 * server and client read messages with, reached through `_http_common` (internal but stable
 * across Node 18–24, and what Node's own HTTP modules import). The gateway reads request
 * heads and the service's responses with it, without Node's server or client around it.
 */
export interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void
  execute(data: Buffer): number | LlhttpError
  finish(): LlhttpError | undefined
  close(): void
  [callback: number]: unknown
}

/** What execute() and finish() return for input llhttp refused. */
export type LlhttpError = Error & { code?: string; reason?: string; bytesParsed?: number }

interface LlhttpParserClass {
  new (): LlhttpParser
  REQUEST: number
  RESPONSE: number
  kOnMessageBegin: number
  kOnHeaders: number
  kOnHeadersComplete: number
  kOnBody: number
  kOnMessageComplete: number
  kOnExecute: number
  kOnTimeout: number
  kLenientNone: number
}

const common = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: LlhttpParserClass
  /** Method names by the index kOnHeadersComplete reports. */
  methods: string[]
}

export const HTTPParser = common.HTTPParser
export const METHODS = common.methods
