import { Agent, createServer, get } from 'node:http'

/**
 * hello-caller: a service that calls another service of the mesh through its own
 * service-mode proxy's gateway, http://127.0.0.1:$PROXY_PORT/<target>/ — the
 * service-to-service path. GET / answers with what the target said.
 *
 * Port: first argument or SERVICE_PORT; PROXY_PORT: the proxy's gateway;
 * HELLO_TARGET: the service to call (default hello-world-server).
 */
const CALL_TIMEOUT_MS = 10_000

function main(): void {
  const portText = process.argv[2] ?? process.env.SERVICE_PORT
  const proxyPort = Number(process.env.PROXY_PORT)
  if (portText == null || !/^\d+$/.test(portText) || !(proxyPort > 0)) {
    process.stderr.write('usage: PROXY_PORT=PORT hello-caller PORT (or SERVICE_PORT=PORT)\n')
    process.exitCode = 2
    return
  }
  const target = process.env.HELLO_TARGET ?? 'hello-world-server'
  const agent = new Agent({ keepAlive: true })
  const server = createServer((req, res) => {
    const call = get(
      { host: '127.0.0.1', port: proxyPort, path: `/${target}/`, agent, timeout: CALL_TIMEOUT_MS },
      (answer) => {
        const chunks: Buffer[] = []
        answer.on('data', (c: Buffer) => chunks.push(c))
        answer.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8').trim()
          res.writeHead(answer.statusCode === 200 ? 200 : 502, { 'content-type': 'text/plain' })
          res.end(`hello-caller asked ${target}: ${answer.statusCode} ${text}\n`)
        })
      },
    )
    call.on('timeout', () => call.destroy(new Error('timed out')))
    call.on('error', (err) => {
      res.writeHead(502, { 'content-type': 'text/plain' })
      res.end(`hello-caller could not reach ${target}: ${err.message}\n`)
    })
    req.resume()
  })
  server.listen(Number(portText), process.env.SERVICE_HOST ?? '0.0.0.0', () => {
    process.stdout.write(`hello-caller listening on ${portText}, calling ${target}\n`)
  })
  const stop = (): void => {
    server.close()
    server.closeIdleConnections()
    agent.destroy()
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main()
