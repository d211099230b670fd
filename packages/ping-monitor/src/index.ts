export * from './constants.ts'
export { COMMAND, main, PING_MONITOR } from './main.ts'
export { PingMonitor, type PingMonitorInit } from './monitor.ts'
export { type PeerEntry, PeerTable } from './peer-table.ts'
