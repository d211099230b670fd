/**
 * The private-network (PSK) connection protector: @libp2p/pnet 3.0.27's protocol and
 * code, with its XOR replaced (`xsalsa20.ts` says why). Same handshake: each side sends
 * a random 24-byte nonce and reads the other's, then every byte each way is XORed with
 * XSalsa20(PSK, the sender's nonce). A stock `preSharedKey()` node with the same key
 * talks to this one (test/pnet.spec.ts).
 */
import type {
  AbortOptions,
  ConnectionProtector,
  Logger,
  MultiaddrConnection,
  StreamCloseEvent,
  StreamMessageEvent,
} from '@libp2p/interface'
import { InvalidParametersError } from '@libp2p/interface'
import {
  AbstractMultiaddrConnection,
  type AbstractMultiaddrConnectionInit,
  byteStream,
  type SendResult,
} from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import { PSK_KEY_LENGTH } from './constants.ts'
import { InvalidPskError } from './errors.ts'
import type { Psk } from './psk.ts'
import { type XorStream, XSALSA20_NONCE_BYTES, xsalsa20Stream } from './xsalsa20.ts'

export interface PskProtectorInit {
  /** The 32-byte key (not the swarm key file's text, which @libp2p/pnet takes). */
  psk: Psk
  /**
   * Nonce exchange timeout for a caller that passes no options (as @libp2p/pnet: default
   * 1 s). libp2p's upgrader always passes its own signal, which bounds the exchange instead.
   */
  timeout?: number
}

interface BoxInit extends Omit<AbstractMultiaddrConnectionInit, 'remoteAddr' | 'direction'> {
  localNonce: Uint8Array
  remoteNonce: Uint8Array
  psk: Uint8Array
  maConn: MultiaddrConnection
  log: Logger
}

/** The protected connection: XOR on the way in and out, everything else passed through. */
class BoxMessageStream extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection
  private readonly inboundXor: XorStream
  private readonly outboundXor: XorStream

  constructor(init: BoxInit) {
    super({ ...init, remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction })
    this.inboundXor = xsalsa20Stream(init.remoteNonce, init.psk)
    this.outboundXor = xsalsa20Stream(init.localNonce, init.psk)
    this.maConn = init.maConn
    this.maConn.addEventListener('message', (evt: StreamMessageEvent) => {
      // In place: the socket's read buffers are this connection's alone and consumed
      // here, so no second copy of every byte received (and less garbage: ~1 MB per MB).
      const data = evt.data
      if (data instanceof Uint8Array) {
        this.inboundXor.update(data, data)
      } else {
        for (const buf of data) this.inboundXor.update(buf, buf)
      }
      this.onData(data)
    })
    // resume sending when the underlying connection can accept more data
    this.maConn.addEventListener('drain', () => {
      this.onMuxerDrain()
    })
    this.maConn.addEventListener('close', (evt: StreamCloseEvent) => {
      if (evt.error != null) {
        if (evt.local === true) this.abort(evt.error)
        else this.onRemoteReset()
      } else {
        this.onTransportClosed()
      }
    })
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    await this.maConn.close(options)
  }

  sendData(data: Uint8ArrayList): SendResult {
    return { sentBytes: data.byteLength, canSendMore: this.maConn.send(this.xorOut(data)) }
  }

  /** The outgoing bytes XORed into one new buffer: no concatenated copy first (the
   * buffers are the layer above's, so not changed in place). */
  private xorOut(data: Uint8ArrayList): Uint8Array {
    const out = Buffer.allocUnsafe(data.byteLength)
    let at = 0
    for (const buf of data) {
      this.outboundXor.update(buf, out.subarray(at, at + buf.byteLength))
      at += buf.byteLength
    }
    return out
  }

  sendReset(err: Error): void {
    this.maConn.abort(err)
  }

  sendPause(): void {
    this.maConn.pause()
  }

  sendResume(): void {
    this.maConn.resume()
  }
}

class PskConnectionProtector implements ConnectionProtector {
  private readonly psk: Uint8Array
  private readonly timeout: number

  constructor(init: PskProtectorInit) {
    if (init.psk.byteLength !== PSK_KEY_LENGTH) {
      throw new InvalidPskError(`a PSK is ${PSK_KEY_LENGTH} bytes, got ${init.psk.byteLength}`)
    }
    this.psk = Uint8Array.from(init.psk)
    this.timeout = init.timeout ?? 1000
  }

  readonly [Symbol.toStringTag] = '@mtc/p2pnode/pnet'

  async protect(
    connection: MultiaddrConnection,
    options?: AbortOptions,
  ): Promise<MultiaddrConnection> {
    if (connection == null) {
      throw new InvalidParametersError('No connection for the handshake provided')
    }
    const log = connection.log.newScope('pnet')
    log('protecting the connection')
    const localNonce = crypto.getRandomValues(new Uint8Array(XSALSA20_NONCE_BYTES))
    const opts = options ?? { signal: AbortSignal.timeout(this.timeout) }
    const bytes = byteStream(connection)
    const [result] = await Promise.all([
      bytes.read({ bytes: XSALSA20_NONCE_BYTES, ...opts }),
      bytes.write(localNonce, opts),
    ])
    const remoteNonce = result.subarray()
    log('exchanged nonces')
    return new BoxMessageStream({
      localNonce,
      remoteNonce,
      psk: this.psk,
      maConn: bytes.unwrap(),
      log,
    })
  }
}

/** libp2p's `connectionProtector` option: the mesh's PSK layer. */
export function pskProtector(init: PskProtectorInit): () => ConnectionProtector {
  return () => new PskConnectionProtector(init)
}
