import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { streamBudget } from './stream-budget.ts'

/** Latency buckets from 0.5 ms (a warm loopback hop) to 30 s (a cold start or a stall). */
const DURATION_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
]

/** What the instance side relayed (ServiceEndpoint.relayCounts). */
export interface EndpointCounts {
  streamsOpen: number
  bytesIn: number
  bytesOut: number
  refusals: number
  exchanges: number
}

/** A counter kept elsewhere, set to its value at scrape time. */
function setCounter(counter: Counter, value: number | undefined): void {
  if (value == null) return
  counter.reset()
  counter.inc(value)
}

export interface RttSample {
  service: string
  instance: string
  seconds: number
  /** This proxy's requests on the instance now. */
  inFlight: number
  /** Expected latency of the next request (what selection weighs by load). */
  expectedSeconds: number
}

/** The proxy's own Prometheus metrics (the libp2p stack's come from p2pnode). */
export class ProxyMetrics {
  readonly requests: Counter<'service' | 'code'>
  readonly duration: Histogram<'service'>
  readonly retries: Counter<'service'>
  readonly instanceChanges: Counter<'service'>
  readonly streamsOpened: Counter<'service'>
  readonly inboundStreams: Counter
  readonly allocations: Counter<'service' | 'result'>
  readonly allocationDuration: Histogram<'service'>
  readonly waiting: Gauge
  readonly registryReads: Counter<'result'>
  readonly scaleOuts: Counter<'service' | 'trigger' | 'result'>
  private scalingSource: () => Array<{ service: string; instances: number; perInstance: number }> =
    () => []
  readonly healthCheckFailures: Counter
  readonly instancesByImage: Gauge<'service' | 'image' | 'state'>
  private rttSource: () => RttSample[] = () => []
  private gatewaySource?: () => { inFlight: number }
  private endpointSource?: () => EndpointCounts
  private statusSource?: () => { ready: boolean; idleSeconds: number }

  constructor(registry: Registry) {
    const registers = [registry]
    this.requests = new Counter({
      name: 'mtc_proxy_requests_total',
      help: 'Requests answered by the gateway, by service and HTTP status code',
      labelNames: ['service', 'code'],
      registers,
    })
    this.duration = new Histogram({
      name: 'mtc_proxy_request_duration_seconds',
      help: 'Gateway requests from the request head to the last byte of the response',
      labelNames: ['service'],
      buckets: DURATION_BUCKETS,
      registers,
    })
    this.retries = new Counter({
      name: 'mtc_proxy_retries_total',
      help: 'Requests sent again to another instance after a failed attempt',
      labelNames: ['service'],
      registers,
    })
    this.instanceChanges = new Counter({
      name: 'mtc_proxy_instance_changes_total',
      help: 'Times the preferred instance of a service changed',
      labelNames: ['service'],
      registers,
    })
    this.streamsOpened = new Counter({
      name: 'mtc_proxy_streams_opened_total',
      help: 'Mesh streams the gateway opened to instances (warm streams are reused)',
      labelNames: ['service'],
      registers,
    })
    this.healthCheckFailures = new Counter({
      name: 'mtc_proxy_health_check_failures_total',
      help: 'Service mode: failed HTTP health checks of the local service (--health-path)',
      registers,
    })
    this.instancesByImage = new Gauge({
      name: 'mtc_proxy_instances',
      help: 'Instances this proxy knows, by service, image ID (short) and state (usable, draining, down)',
      labelNames: ['service', 'image', 'state'],
      registers,
    })
    this.inboundStreams = new Counter({
      name: 'mtc_proxy_inbound_streams_total',
      help: 'Mesh streams other proxies opened to this instance',
      registers,
    })
    // The instance side relays bytes and parses none: what it counts is read when scraped.
    const inboundRequests: Counter = new Counter({
      name: 'mtc_proxy_inbound_requests_total',
      help: 'Service mode: requests from the mesh, counted without parsing as runs of bytes toward the service that follow its answer (exact when a stream carries one request at a time, as gateways send)',
      registers,
      collect: () => setCounter(inboundRequests, this.endpointSource?.().exchanges),
    })
    const inboundRefusals: Counter = new Counter({
      name: 'mtc_proxy_inbound_refusals_total',
      help: 'Service mode: streams refused because the local service did not take the connection',
      registers,
      collect: () => setCounter(inboundRefusals, this.endpointSource?.().refusals),
    })
    const inboundBytes: Counter<'direction'> = new Counter({
      name: 'mtc_proxy_inbound_bytes_total',
      help: 'Service mode: bytes relayed between mesh streams and the local service, by direction: in (to the service) or out',
      labelNames: ['direction'],
      registers,
      collect: () => {
        const s = this.endpointSource?.()
        if (s == null) return
        inboundBytes.reset()
        inboundBytes.inc({ direction: 'in' }, s.bytesIn)
        inboundBytes.inc({ direction: 'out' }, s.bytesOut)
      },
    })
    this.allocations = new Counter({
      name: 'mtc_proxy_allocations_total',
      help: 'Instances asked of allocators, by service and result (ok, no-allocator or the error code)',
      labelNames: ['service', 'result'],
      registers,
    })
    this.allocationDuration = new Histogram({
      name: 'mtc_proxy_allocation_duration_seconds',
      help: 'From asking for an instance until it answered its first probe (or the failure)',
      labelNames: ['service'],
      buckets: DURATION_BUCKETS,
      registers,
    })
    this.waiting = new Gauge({
      name: 'mtc_proxy_requests_waiting',
      help: 'Requests waiting for an instance being started for them',
      registers,
    })
    this.registryReads = new Counter({
      name: 'mtc_proxy_registry_reads_total',
      help: 'Service records read from hl-service, by result (found, unknown, unavailable)',
      labelNames: ['result'],
      registers,
    })
    this.scaleOuts = new Counter({
      name: 'mtc_proxy_scale_outs_total',
      help: 'Scale-outs this proxy decided, by service, trigger (panic: above twice the concurrency target; sustained: above it over the window) and result (ok, starting: another was starting one, at-max, or the error code)',
      labelNames: ['service', 'trigger', 'result'],
      registers,
    })
    const instances: Gauge<'service'> = new Gauge({
      name: 'mtc_proxy_service_instances',
      help: 'Usable instances of each service in use, as this proxy sees them',
      labelNames: ['service'],
      registers,
      collect: () => {
        instances.reset()
        for (const s of this.scalingSource()) instances.set({ service: s.service }, s.instances)
      },
    })
    const perInstance: Gauge<'service'> = new Gauge({
      name: 'mtc_proxy_service_load_per_instance',
      help: 'Requests in flight per usable instance of each service in use (what scale-out compares with the concurrency target)',
      labelNames: ['service'],
      registers,
      collect: () => {
        perInstance.reset()
        for (const s of this.scalingSource()) perInstance.set({ service: s.service }, s.perInstance)
      },
    })
    const rtt: Gauge<'service' | 'instance'> = new Gauge({
      name: 'mtc_proxy_upstream_rtt_seconds',
      help: 'Round-trip time to each known instance (the smallest of its last 10 probes)',
      labelNames: ['service', 'instance'],
      registers,
      collect: () => {
        rtt.reset()
        for (const s of this.rttSource())
          rtt.set({ service: s.service, instance: s.instance }, s.seconds)
      },
    })
    const upstreamInFlight: Gauge<'service' | 'instance'> = new Gauge({
      name: 'mtc_proxy_upstream_requests_in_flight',
      help: "This proxy's requests in flight on each known instance (selection's load)",
      labelNames: ['service', 'instance'],
      registers,
      collect: () => {
        upstreamInFlight.reset()
        for (const s of this.rttSource())
          upstreamInFlight.set({ service: s.service, instance: s.instance }, s.inFlight)
      },
    })
    const expected: Gauge<'service' | 'instance'> = new Gauge({
      name: 'mtc_proxy_upstream_latency_seconds',
      help: 'Expected latency of the next request to each known instance (peak-EWMA of request latency, error penalty included)',
      labelNames: ['service', 'instance'],
      registers,
      collect: () => {
        expected.reset()
        for (const s of this.rttSource())
          expected.set({ service: s.service, instance: s.instance }, s.expectedSeconds)
      },
    })
    const inFlight: Gauge = new Gauge({
      name: 'mtc_proxy_requests_in_flight',
      help: 'Gateway requests being answered now (from the request head to the last response byte)',
      registers,
      collect: () => {
        const s = this.gatewaySource?.()
        if (s != null) inFlight.set(s.inFlight)
      },
    })
    const inboundOpen: Gauge = new Gauge({
      name: 'mtc_proxy_inbound_streams_open',
      help: 'Service mode: mesh streams being relayed to the local service now (warm idle ones included)',
      registers,
      collect: () => {
        const s = this.endpointSource?.()
        if (s != null) inboundOpen.set(s.streamsOpen)
      },
    })
    const buffered: Gauge<'direction'> = new Gauge({
      name: 'mtc_proxy_stream_buffered_bytes',
      help: 'Bytes held for mesh streams (Node side and libp2p buffers), by direction: in (received, not yet read) or out (written, not yet sent)',
      labelNames: ['direction'],
      registers,
      collect: () => {
        const b = streamBudget.buffered()
        buffered.set({ direction: 'in' }, b.in)
        buffered.set({ direction: 'out' }, b.out)
      },
    })
    const window: Gauge = new Gauge({
      name: 'mtc_proxy_stream_window_bytes',
      help: 'Receive window each mesh stream may grow to now: the stream buffer budget shared by the streams open',
      registers,
      collect: () => window.set(streamBudget.windowBytes),
    })
    const ready: Gauge = new Gauge({
      name: 'mtc_proxy_service_ready',
      help: 'Service mode: 1 while the local service accepts connections',
      registers,
      collect: () => {
        const s = this.statusSource?.()
        if (s != null) ready.set(s.ready ? 1 : 0)
      },
    })
    const idle: Gauge = new Gauge({
      name: 'mtc_proxy_idle_seconds',
      help: 'Service mode: seconds since a byte was last relayed between the mesh and the local service',
      registers,
      collect: () => {
        const s = this.statusSource?.()
        if (s != null) idle.set(s.idleSeconds)
      },
    })
  }

  setGatewaySource(source: () => { inFlight: number }): void {
    this.gatewaySource = source
  }

  setEndpointSource(source: () => EndpointCounts): void {
    this.endpointSource = source
  }

  setScalingSource(
    source: () => Array<{ service: string; instances: number; perInstance: number }>,
  ): void {
    this.scalingSource = source
  }

  setRttSource(source: () => RttSample[]): void {
    this.rttSource = source
  }

  setStatusSource(source: () => { ready: boolean; idleSeconds: number }): void {
    this.statusSource = source
  }
}
