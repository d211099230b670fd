import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { freePort, type Proc, run, waitFor } from '@mtc/testkit'

/**
 * Starts one nginx with `http` as the inside of its http block. Everything it writes stays
 * in `dir` (`-p`/`-e`): its own pid file, error log and temp files, no system config touched.
 */
async function startNginx(dir: string, http: string): Promise<Proc> {
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .map((t) => `  ${t}_temp_path ${join(dir, `${t}_temp`)};`)
    .join('\n')
  const conf = join(dir, 'nginx.conf')
  await writeFile(
    conf,
    `daemon off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 1024; }
http {
  access_log off;
${temp}
${http}
}
`,
  )
  return run('nginx', ['-p', dir, '-e', join(dir, 'error.log'), '-c', conf])
}

/**
 * One nginx reverse-proxy hop forwarding 127.0.0.1:`port` to 127.0.0.1:`upstream` over
 * keep-alive connections, as a hop of the itsUP layout does.
 */
function hopConfig(port: number, upstream: number): string {
  return `  upstream next {
    server 127.0.0.1:${upstream};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }
  }`
}

/**
 * Starts `hops` nginx processes in series in front of 127.0.0.1:`upstream` (client → hop 1
 * → … → hop n → upstream); resolves with the first hop's port once a GET of `probePath`
 * answers 200 through all of them. The processes are testkit's: `stopAll` ends them.
 */
export async function startNginxChain(
  dir: string,
  upstream: number,
  hops: number,
  probePath: string,
): Promise<{ port: number; procs: Proc[] }> {
  const procs: Proc[] = []
  let next = upstream
  for (let i = hops; i >= 1; i--) {
    const hopDir = join(dir, `nginx-${i}`)
    await mkdir(hopDir, { recursive: true })
    const port = await freePort()
    procs.push(await startNginx(hopDir, hopConfig(port, next)))
    next = port
  }
  const url = `http://127.0.0.1:${next}${probePath}`
  await waitFor(`${hops} nginx hops`, async () => (await fetch(url)).status === 200, {
    timeoutMs: 10_000,
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n${procs.map((p) => p.stderr()).join('\n')}`)
  })
  return { port: next, procs }
}

/**
 * One nginx serving the files of `dir/www` (made here) on 127.0.0.1, as a service would:
 * `files` maps a path (no leading slash) to its content. Resolves with its port once the
 * first file is served. Stopped by testkit's `stopAll`.
 */
export async function startNginxStatic(
  dir: string,
  files: Record<string, string | Buffer>,
): Promise<{ port: number; proc: Proc }> {
  const www = join(dir, 'www')
  await mkdir(www, { recursive: true })
  for (const [name, content] of Object.entries(files)) await writeFile(join(www, name), content)
  // nginx's workers run as another user when started as root: they must reach the files
  // (a temporary directory is private to its owner).
  for (const d of [dirname(dir), dir, www]) await chmod(d, 0o755)
  const port = await freePort()
  const proc = await startNginx(
    dir,
    `  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port};
    root ${www};
  }`,
  )
  const url = `http://127.0.0.1:${port}/${Object.keys(files)[0]}`
  await waitFor('nginx serving files', async () => (await fetch(url)).status === 200, {
    timeoutMs: 10_000,
  }).catch((err: Error) => {
    throw new Error(`${err.message}\n${proc.stderr()}`)
  })
  return { port, proc }
}
