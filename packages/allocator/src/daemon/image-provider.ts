import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { type BlobStore, fetchBlob } from '@mtc/blobs'
import type { ServiceRecord } from '@mtc/hash-lookup'
import { type Announcer, findProviders } from '@mtc/p2pnode'
import { BLOB_FETCH_IDLE_MS, BLOB_FETCH_MAX_PROVIDERS } from '../constants.ts'
import { AllocationError } from '../errors.ts'
import type { ContainerRuntime } from './runtime.ts'

export interface ImageProviderComponents {
  runtime: ContainerRuntime
  libp2p: Libp2p
  blobs: BlobStore
  announcer: Announcer
  /** The hl-service in use (it always holds the blobs it registered). */
  registryPeer: () => Promise<PeerId | undefined>
  log: Logger
}

/**
 * Makes sure a service's image is in Docker: present → done; a stored tarball → fetched
 * over the overlay from a peer that has it (hl-service or another allocator), digest
 * verified while it is written, `docker load`, image ID verified; a registry image →
 * pulled by digest, image ID verified. One fetch per image at a time.
 */
export class ImageProvider {
  private readonly c: ImageProviderComponents
  private readonly inFlight = new Map<string, Promise<boolean>>()

  constructor(components: ImageProviderComponents) {
    this.c = components
  }

  /** Resolves true when the image had to be fetched, false when it was present. */
  async ensure(record: ServiceRecord, signal: AbortSignal): Promise<boolean> {
    if (await this.c.runtime.hasImage(record.imageId)) return false
    let job = this.inFlight.get(record.imageId)
    if (job == null) {
      job = this.fetch(record, signal).finally(() => this.inFlight.delete(record.imageId))
      this.inFlight.set(record.imageId, job)
    }
    return await job
  }

  private async fetch(record: ServiceRecord, signal: AbortSignal): Promise<boolean> {
    if (record.blob != null) {
      const { digest, size } = record.blob
      if (!(await this.c.blobs.has(digest))) await this.fetchBlob(digest, size, signal)
      const { path } = await this.c.blobs.stat(digest)
      try {
        await this.c.runtime.loadImage(path)
      } catch (err) {
        throw new AllocationError(
          'ERR_IMAGE_UNAVAILABLE',
          `docker load of ${digest} failed: ${(err as Error).message}`,
        )
      }
      this.c.announcer.add('blob', digest)
    } else if (record.image.includes('@sha256:')) {
      try {
        await this.c.runtime.pullImage(record.image)
      } catch (err) {
        throw new AllocationError(
          'ERR_IMAGE_UNAVAILABLE',
          `cannot pull ${record.image}: ${(err as Error).message}`,
        )
      }
    } else {
      throw new AllocationError(
        'ERR_IMAGE_UNAVAILABLE',
        `image ${record.imageId} of ${record.name} is not on this host and has neither a tarball nor a registry digest`,
      )
    }
    if (!(await this.c.runtime.hasImage(record.imageId))) {
      throw new AllocationError(
        'ERR_IMAGE_UNAVAILABLE',
        `image ${record.imageId} of ${record.name} is not what ${record.blob?.digest ?? record.image} holds`,
      )
    }
    return true
  }

  /** Tries the providers of the blob one by one; a corrupted or cut transfer leaves nothing. */
  private async fetchBlob(digest: string, size: number, signal: AbortSignal): Promise<void> {
    const { libp2p, log } = this.c
    const candidates: PeerId[] = []
    const registry = await this.c.registryPeer().catch(() => undefined)
    const found = await findProviders(libp2p, 'blob', digest, {
      signal: AbortSignal.any([signal, AbortSignal.timeout(5_000)]),
      limit: BLOB_FETCH_MAX_PROVIDERS,
    }).catch(() => [])
    for (const p of [...found, ...(registry != null ? [registry] : [])]) {
      if (!candidates.some((c) => c.equals(p))) candidates.push(p)
    }
    const errors: string[] = []
    for (const peer of candidates.slice(0, BLOB_FETCH_MAX_PROVIDERS)) {
      try {
        await fetchBlob(
          libp2p,
          peer,
          digest,
          async (chunks) => {
            await this.c.blobs.write(chunks, { expectedDigest: digest, maxSize: size, signal })
          },
          AbortSignal.any([
            signal,
            AbortSignal.timeout(BLOB_FETCH_IDLE_MS + Math.ceil(size / 1_000)),
          ]),
        )
        log('fetched blob %s (%d bytes) from %p', digest, size, peer)
        return
      } catch (err) {
        errors.push(`${peer.toString()}: ${(err as Error).message}`)
        log('blob %s from %p failed: %s', digest, peer, (err as Error).message)
      }
    }
    throw new AllocationError(
      'ERR_IMAGE_UNAVAILABLE',
      candidates.length === 0
        ? `no peer provides blob ${digest}`
        : `blob ${digest} could not be fetched: ${errors.join('; ')}`,
    )
  }
}
