/**
 * `@mtc/p2pnode/cli`: what a command line needs before it talks to the mesh — flag
 * specs and parsing, help text, the shared overlay flags, the version — without loading
 * libp2p, so `--help` and `--version` print at once. The root, `@mtc/p2pnode`, exports
 * the same names.
 */
export { MTC_VERSION } from './constants.ts'
export { UsageError } from './errors.ts'
export { exitWith } from './exit.ts'
export {
  type CommandSpec,
  type FlagSpec,
  type FlagSpecs,
  type FlagValues,
  helpText,
  type ParsedCommandLine,
  parseCommandLine,
  parseDurationFlag,
  parseHostPort,
  parseMultiaddrFlag,
  parsePortNumber,
  parsePositiveNumberFlag,
} from './flags.ts'
export {
  LOG_LEVELS,
  type LogLevel,
  NODE_ENV_HELP,
  NODE_FLAGS,
  type NodeConfig,
  resolveNodeConfig,
} from './node-config.ts'
