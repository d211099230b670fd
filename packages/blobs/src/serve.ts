import type { Libp2p } from '@libp2p/interface'
import { handleRpc } from '@mtc/p2pnode'
import { assertDigest } from './digest.ts'
import { BLOB_GET, type BlobRequest } from './protocol.ts'
import type { BlobStore } from './store.ts'

/**
 * Serves stored blobs on BLOB_GET to any mesh peer that asks by digest, streamed with
 * backpressure. hl-service and allocators (which keep the tarballs they fetched) both
 * run it, so an image can come from the nearest node that has it.
 */
export async function serveBlobs(
  libp2p: Libp2p,
  blobs: BlobStore,
  hooks: {
    observe?: <T>(fn: () => Promise<T>) => Promise<T>
    served?: (bytes: number) => void
  } = {},
): Promise<void> {
  const observe = hooks.observe ?? ((fn) => fn())
  await handleRpc(libp2p, BLOB_GET, (rpc) =>
    observe(async () => {
      const req = await rpc.readJson<BlobRequest>()
      const digest = assertDigest(req?.digest)
      const { size } = await blobs.stat(digest)
      const file = await blobs.createReadStream(digest)
      await rpc.writeJson({ ok: true, size })
      await rpc.writeChunks(
        (async function* () {
          for await (const chunk of file) {
            hooks.served?.((chunk as Buffer).byteLength)
            yield chunk as Buffer
          }
        })(),
      )
    }),
  )
}
