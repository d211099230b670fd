import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import type Dockerode from 'dockerode'

/** What the allocator asks of a container engine; Docker in production, a fake in unit tests. */
export interface ContainerRuntime {
  /** Whether an image with this ID (`sha256:...`) is present. */
  hasImage(imageId: string): Promise<boolean>
  /** `docker load` of a `docker save` tarball on disk. */
  loadImage(tarPath: string): Promise<void>
  /** `docker pull` of a reference (by digest, for registry images). */
  pullImage(reference: string): Promise<void>
  /** Creates and starts a container; returns its ID. */
  run(spec: ContainerSpec): Promise<string>
  stopAndRemove(id: string, timeoutSeconds: number): Promise<void>
  /** Containers matching every label filter given (`key` or `key=value`), running or not. */
  list(labels: string[]): Promise<ContainerInfo[]>
  /** Whether the container runs (false when it exited or is gone). */
  isRunning(id: string): Promise<boolean>
  /**
   * Containers carrying label `key` that end (die, OOM-killed, removed), as the engine
   * reports them, until `signal` aborts or the engine closes the stream.
   */
  exits(key: string, signal: AbortSignal): AsyncIterable<ContainerExit>
  /** The last lines a container wrote, for error messages. */
  logTail(id: string, lines: number): Promise<string>
}

export interface ContainerSpec {
  name: string
  image: string
  env: Record<string, string>
  labels: Record<string, string>
  /** `host:container:ro` bind mounts. */
  binds: string[]
  cpus?: number
  memoryBytes?: number
}

export interface ContainerExit {
  id: string
  /** die, oom or destroy. */
  action: string
}

export interface ContainerInfo {
  id: string
  name: string
  labels: Record<string, string>
  running: boolean
}

/** ContainerRuntime over the Docker Engine API (dockerode). */
export class DockerRuntime implements ContainerRuntime {
  private readonly docker: Dockerode

  constructor(docker: Dockerode) {
    this.docker = docker
  }

  async hasImage(imageId: string): Promise<boolean> {
    try {
      const info = await this.docker.getImage(imageId).inspect()
      return info.Id === imageId
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false
      throw err
    }
  }

  async loadImage(tarPath: string): Promise<void> {
    const stream = await this.docker.loadImage(createReadStream(tarPath), { quiet: true })
    await this.follow(stream)
  }

  async pullImage(reference: string): Promise<void> {
    const stream = await this.docker.pull(reference)
    await this.follow(stream)
  }

  async run(spec: ContainerSpec): Promise<string> {
    const container = await this.docker.createContainer({
      name: spec.name,
      Image: spec.image,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      Labels: spec.labels,
      HostConfig: {
        NetworkMode: 'host',
        Binds: spec.binds,
        // No binary of the image (setuid, file capabilities) may regain the privileges the
        // entrypoint drops for the service: it could read the swarm key (mtc/base requires it).
        SecurityOpt: ['no-new-privileges'],
        RestartPolicy: { Name: 'no' },
        ...(spec.cpus != null ? { NanoCpus: Math.round(spec.cpus * 1e9) } : {}),
        ...(spec.memoryBytes != null ? { Memory: spec.memoryBytes } : {}),
      },
    })
    try {
      await container.start()
    } catch (err) {
      await container.remove({ force: true }).catch(() => {})
      throw err
    }
    return container.id
  }

  async stopAndRemove(id: string, timeoutSeconds: number): Promise<void> {
    const c = this.docker.getContainer(id)
    await c.stop({ t: timeoutSeconds }).catch((err: { statusCode?: number }) => {
      // 304: already stopped; 404: already gone.
      if (err.statusCode !== 304 && err.statusCode !== 404) throw err
    })
    await c.remove({ force: true }).catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 404 && err.statusCode !== 409) throw err
    })
  }

  async list(labels: string[]): Promise<ContainerInfo[]> {
    const containers = await this.docker.listContainers({ all: true, filters: { label: labels } })
    return containers.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? '').replace(/^\//, ''),
      labels: c.Labels,
      running: c.State === 'running',
    }))
  }

  async isRunning(id: string): Promise<boolean> {
    try {
      return (await this.docker.getContainer(id).inspect()).State.Running
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return false
      throw err
    }
  }

  async *exits(key: string, signal: AbortSignal): AsyncIterable<ContainerExit> {
    const stream = (await this.docker.getEvents({
      filters: { type: ['container'], event: ['die', 'oom', 'destroy'], label: [key] },
      abortSignal: signal,
    })) as unknown as Readable
    // One JSON object per line (Docker's events endpoint streams them as they happen).
    const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })
    try {
      for await (const line of lines) {
        if (line.trim() === '') continue
        const e = JSON.parse(line) as { id?: string; Action?: string; Actor?: { ID?: string } }
        const id = e.Actor?.ID ?? e.id
        if (id != null && e.Action != null) yield { id, action: e.Action }
      }
    } finally {
      lines.close()
      stream.destroy()
    }
  }

  async logTail(id: string, lines: number): Promise<string> {
    try {
      const buf = (await this.docker
        .getContainer(id)
        .logs({ stdout: true, stderr: true, tail: lines })) as unknown as Buffer
      return demux(buf)
    } catch {
      return ''
    }
  }

  /** Waits for a progress stream (load, pull) to end; its error messages become errors. */
  private follow(stream: NodeJS.ReadableStream): Promise<void> {
    return new Promise((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (err: Error | null, output: Array<{ error?: string }>) => {
          const failed = output?.find((o) => o.error != null)
          if (err != null) reject(err)
          else if (failed != null) reject(new Error(failed.error))
          else resolve()
        },
      )
    })
  }
}

/** Docker's log stream without a TTY: 8-byte frame headers before each chunk. */
function demux(buf: Buffer): string {
  const out: Buffer[] = []
  let off = 0
  while (off + 8 <= buf.length) {
    const len = buf.readUInt32BE(off + 4)
    out.push(buf.subarray(off + 8, off + 8 + len))
    off += 8 + len
  }
  return Buffer.concat(out).toString('utf8')
}
