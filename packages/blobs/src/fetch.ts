import type { Libp2p, PeerId } from '@libp2p/interface'
import { expectReply, openRpc, RemoteError, type RpcStream } from '@mtc/p2pnode'
import type { Multiaddr } from '@multiformats/multiaddr'
import { blobErrorFromCode, isBlobErrorCode } from './errors.ts'
import { BLOB_GET, type BlobReply, type BlobRequest } from './protocol.ts'

/** Receives a blob's bytes as they arrive; `size` is the size the server announced. */
export type BlobSink = (chunks: AsyncIterable<Uint8Array>, size: number) => Promise<void>

/**
 * Fetches blob `digest` from `peer` (hl-service or an allocator that keeps it) over
 * BLOB_GET, streaming it into `sink`; returns the announced size. The sink verifies the
 * bytes (BlobStore.write with `expectedDigest` and `maxSize`): a peer is not trusted.
 */
export async function fetchBlob(
  libp2p: Libp2p,
  peer: PeerId | Multiaddr,
  digest: string,
  sink: BlobSink,
  signal?: AbortSignal,
): Promise<number> {
  return await requestBlob(await openRpc(libp2p, peer, BLOB_GET, { signal }), digest, sink, signal)
}

/**
 * The BLOB_GET exchange on a stream already open (closed afterwards either way). A refusal
 * comes back as the blob error the server threw (BlobNotFoundError...).
 */
export async function requestBlob(
  rpc: RpcStream,
  digest: string,
  sink: BlobSink,
  signal?: AbortSignal,
): Promise<number> {
  try {
    await rpc.writeJson({ digest } satisfies BlobRequest, signal)
    let reply: BlobReply
    try {
      reply = await expectReply<BlobReply>(rpc, signal)
    } catch (err) {
      if (err instanceof RemoteError && isBlobErrorCode(err.code))
        throw blobErrorFromCode(err.code, err.message)
      throw err
    }
    await sink(rpc.readChunks(signal), reply.size)
    return reply.size
  } finally {
    await rpc.close()
  }
}
