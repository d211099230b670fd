import { runToEnd } from '@mtc/testkit'

/**
 * MB/s of one download of `url` to /dev/null with curl; throws unless it got `bytes`. curl,
 * not a Node client: at several hundred MB/s a Node client takes a core of the same 2-CPU
 * machine the proxies run on, and it capped the direct baseline (728 MB/s with Node's
 * http.get, 2.6–4.8 GB/s with curl, same hour).
 */
export async function downloadMBps(url: string, bytes: number): Promise<number> {
  const out = await runToEnd(
    'curl',
    ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{speed_download} %{size_download}', url],
    { timeoutMs: 120_000 },
  )
  const [status, speed, size] = out.stdout.trim().split(' ').map(Number)
  if (out.code !== 0 || status !== 200 || size !== bytes)
    throw new Error(`curl ${url}: HTTP ${status}, ${size} of ${bytes} bytes ${out.stderr}`)
  return speed / 1e6
}
