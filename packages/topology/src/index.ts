export * from './constants.ts'
export {
  parseSpec,
  type RttMeasurement,
  rttWithinTolerance,
  sweepStale,
  Topology,
  type TopologySpec,
} from './topology.ts'
