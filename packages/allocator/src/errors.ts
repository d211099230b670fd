import type { ALLOCATION_ERRORS } from './protocol.ts'

export type AllocationErrorCode = (typeof ALLOCATION_ERRORS)[number]['code']

/** A failed allocation, told apart by `code` (one of ALLOCATION_ERRORS), sent as is. */
export class AllocationError extends Error {
  override readonly name = 'AllocationError'
  readonly code: AllocationErrorCode

  constructor(code: AllocationErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}
