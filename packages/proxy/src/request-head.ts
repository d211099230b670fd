/**
 * A request head as the instance gets it: the request line (method and path as parsed,
 * always HTTP/1.1, since the connection to the service is ours) and `headers`, a flat
 * `[name, value, ...]` list. Names and values come from Node's strict parser or from the
 * gateway itself (no CR, LF or NUL), so they are written as they are, in latin1 as parsed.
 */
export function requestHead(method: string, path: string, headers: string[]): Buffer {
  let text = `${method} ${path} HTTP/1.1\r\n`
  for (let i = 0; i < headers.length; i += 2) text += `${headers[i]}: ${headers[i + 1]}\r\n`
  return Buffer.from(`${text}\r\n`, 'latin1')
}
