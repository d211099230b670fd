import { exitWith } from '@mtc/p2pnode/cli'
import { main } from './cli.ts'

exitWith(await main(process.argv.slice(2)))
