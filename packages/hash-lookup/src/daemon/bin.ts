import { exitWith } from '@mtc/p2pnode'
import { main } from './main.ts'

exitWith(await main(process.argv.slice(2)))
