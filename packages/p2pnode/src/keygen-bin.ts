import { exitWith } from './exit.ts'
import { keygenMain } from './keygen.ts'

exitWith(await keygenMain(process.argv.slice(2)))
