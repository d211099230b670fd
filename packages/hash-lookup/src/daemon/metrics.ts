import { INTERNAL_ERROR_CODE } from '@mtc/p2pnode'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** hl-service's own metrics (`mtc_hl_*`), beside the libp2p stack's. */
export class HashLookupMetrics {
  readonly requests: Counter<'op' | 'outcome'>
  readonly duration: Histogram<'op'>
  readonly etcdUp: Gauge
  readonly blobBytesStored: Counter
  readonly blobBytesServed: Counter
  readonly blobStorage: Gauge<'kind'>
  readonly blobsCollected: Counter
  readonly blobSweeps: Counter<'outcome'>
  readonly blobBytesCollected: Counter
  private watchers: () => number = () => 0

  /** `storage` is read at each scrape for `mtc_hl_blob_storage_bytes`. */
  constructor(
    registry: Registry,
    storage: () => { stored: number; reserved: number; quota?: number } = () => ({
      stored: 0,
      reserved: 0,
    }),
  ) {
    const registers = [registry]
    this.requests = new Counter({
      name: 'mtc_hl_requests_total',
      help: 'Registry requests by operation and outcome (ok or the error code)',
      labelNames: ['op', 'outcome'],
      registers,
    })
    this.duration = new Histogram({
      name: 'mtc_hl_operation_duration_seconds',
      help: 'Time to serve a registry request, by operation (uploads included)',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    })
    this.etcdUp = new Gauge({
      name: 'mtc_hl_etcd_up',
      help: '1 when the last etcd health check succeeded, else 0',
      registers,
    })
    this.blobBytesStored = new Counter({
      name: 'mtc_hl_blob_stored_bytes_total',
      help: 'Bytes of image tarballs accepted and stored',
      registers,
    })
    this.blobBytesServed = new Counter({
      name: 'mtc_hl_blob_served_bytes_total',
      help: 'Bytes of image tarballs sent to peers',
      registers,
    })
    this.blobStorage = new Gauge({
      name: 'mtc_hl_blob_storage_bytes',
      help: 'Blob storage: stored (tarballs on disk), reserved (uploads in progress), quota (--max-storage; absent without one)',
      labelNames: ['kind'],
      registers,
      collect() {
        const { stored, reserved, quota } = storage()
        this.set({ kind: 'stored' }, stored)
        this.set({ kind: 'reserved' }, reserved)
        if (quota != null) this.set({ kind: 'quota' }, quota)
      },
    })
    this.blobSweeps = new Counter({
      name: 'mtc_hl_blob_sweeps_total',
      help: 'Garbage collection passes over the stored tarballs, by outcome (ok, failed: records unreadable, nothing deleted)',
      labelNames: ['outcome'],
      registers,
    })
    this.blobsCollected = new Counter({
      name: 'mtc_hl_blob_collected_total',
      help: 'Tarballs deleted because no record references them any more',
      registers,
    })
    this.blobBytesCollected = new Counter({
      name: 'mtc_hl_blob_collected_bytes_total',
      help: 'Bytes of the tarballs garbage collection deleted',
      registers,
    })
    const metrics = this
    new Gauge({
      name: 'mtc_hl_watchers',
      help: 'Proxies and allocators subscribed to change notices',
      registers,
      collect() {
        this.set(metrics.watchers())
      },
    })
  }

  /** Where `mtc_hl_watchers` reads the number of subscribers. */
  setWatcherSource(source: () => number): void {
    this.watchers = source
  }

  /** Times `fn` and counts its outcome under `op`. */
  async observe<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const end = this.duration.startTimer({ op })
    try {
      const result = await fn()
      this.requests.inc({ op, outcome: 'ok' })
      return result
    } catch (err) {
      this.requests.inc({ op, outcome: (err as { code?: string }).code ?? INTERNAL_ERROR_CODE })
      throw err
    } finally {
      end()
    }
  }
}
