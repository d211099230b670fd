export * from './constants.ts'
export { HostDockerd, sweepStaleMeshDirs } from './dockerd.ts'
export {
  type Component,
  type Daemon,
  HELLO_IMAGE,
  type Instance,
  Mesh,
  type MeshSpec,
  metricSum,
  type Served,
  type ServiceSpec,
} from './mesh.ts'
export * from './regions.ts'
export {
  type HttpAnswer,
  listNetns,
  type MeasureOptions,
  parseSpec,
  type RttMeasurement,
  rttWithinTolerance,
  type StreamAnswer,
  sweepStale,
  Topology,
  type TopologySpec,
} from './topology.ts'
export * from './usage.ts'
