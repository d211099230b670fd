/**
 * Stands in for `etcd3` in the proxy's bundle. The proxy imports @mtc/hash-lookup for its
 * overlay client only, but that package's index also brings its etcd store, and etcd3
 * cannot be bundled (it reads .proto files next to its own sources when imported). The
 * names are those @mtc/hash-lookup imports; a new one fails the bundle step loudly.
 */
function unavailable(): never {
  throw new Error('etcd3 is not part of this bundle (the proxy does not talk to etcd)')
}

export class Etcd3 {
  constructor() {
    unavailable()
  }
}
export class ClientClosedError extends Error {}
export class GRPCCancelledError extends Error {}
export class GRPCDeadlineExceededError extends Error {}
export function isRecoverableError(): boolean {
  return false
}
