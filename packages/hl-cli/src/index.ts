export { type CliIO, COMMAND, main } from './cli.ts'
export { EXIT_CODES, exitCodeFor } from './exit-codes.ts'
