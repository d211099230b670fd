import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { REPO_ROOT } from '@mtc/testkit'
import { parser } from '@prometheus-io/lezer-promql'
import { parse as parseYaml } from 'yaml'

/**
 * Reading deploy/: the PromQL expressions of the Grafana dashboards and the recording
 * rules, and the metric names they reference (found with Prometheus' own lezer grammar).
 */

export const DEPLOY_DIR = join(REPO_ROOT, 'deploy')
export const PROMETHEUS_YML = join(DEPLOY_DIR, 'prometheus.yml')
export const RULES_YML = join(DEPLOY_DIR, 'rules.yml')
export const GRAFANA_DIR = join(DEPLOY_DIR, 'grafana')

/** The job names deploy/prometheus.yml must keep, and each component's metrics port. */
export const JOBS = {
  'mtc-ping-monitor': 9100,
  'mtc-allocator': 9101,
  'mtc-hl-service': 9102,
  'mtc-proxy': 9103,
} as const
export type JobName = keyof typeof JOBS

/** The data source every panel and target names: Grafana's import input (and variable). */
// biome-ignore lint/suspicious/noTemplateCurlyInString: Grafana's placeholder, kept verbatim
export const DS_PROMETHEUS_UID = '${DS_PROMETHEUS}'

/** The Debian package's binaries (scripts/setup.sh installs `prometheus`). */
export const PROMETHEUS_BIN = '/usr/bin/prometheus'
export const PROMTOOL_BIN = '/usr/bin/promtool'

/** Fails with what to do when the prometheus package is missing. */
export function requireBinary(path: string): string {
  if (!existsSync(path)) {
    throw new Error(`${path} is missing: install the Debian package with bash scripts/setup.sh`)
  }
  return path
}

/** One PromQL expression and where it was found, for messages. */
export interface Query {
  where: string
  expr: string
}

/**
 * Grafana's interval macros, replaced by a duration so that the expression parses as
 * Prometheus receives it after Grafana's substitution. Template variables such as
 * `$service` may only appear inside label matcher strings, where they parse as text.
 */
export function substituteGrafanaMacros(expr: string): string {
  return expr.replace(
    /\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}/g,
    '1m',
  )
}

interface Target {
  expr?: string
}
interface Panel {
  title?: string
  targets?: Target[]
  panels?: Panel[]
}
interface Variable {
  name: string
  type: string
  query?: string | { query?: string }
}
export interface Dashboard {
  uid?: string
  title?: string
  panels?: Panel[]
  templating?: { list?: Variable[] }
  __inputs?: { name: string; type: string; pluginId: string }[]
}

/** Every dashboard JSON in deploy/grafana, by file name. */
export async function loadDashboards(): Promise<Map<string, Dashboard>> {
  const files = (await readdir(GRAFANA_DIR)).filter((f) => f.endsWith('.json')).sort()
  const out = new Map<string, Dashboard>()
  for (const f of files) out.set(f, JSON.parse(await readFile(join(GRAFANA_DIR, f), 'utf8')))
  return out
}

/** The PromQL of every dashboard in deploy/grafana (see {@link dashboardQueries}). */
export async function loadDashboardQueries(): Promise<Query[]> {
  return [...(await loadDashboards())].flatMap(([file, d]) => dashboardQueries(file, d))
}

/** Every panel, rows' nested panels (collapsed rows keep theirs inside) included. */
export function allPanels(d: Dashboard): Panel[] {
  const out: Panel[] = []
  const walk = (list: Panel[] | undefined) => {
    for (const p of list ?? []) {
      out.push(p)
      walk(p.panels)
    }
  }
  walk(d.panels)
  return out
}

/**
 * The PromQL of a dashboard: panel targets and query variables. A variable's
 * `label_values(SELECTOR, label)` contributes its selector.
 */
export function dashboardQueries(file: string, d: Dashboard): Query[] {
  const out: Query[] = []
  for (const p of allPanels(d)) {
    for (const [i, t] of (p.targets ?? []).entries()) {
      if (t.expr != null)
        out.push({ where: `${file}: panel "${p.title}" target ${i}`, expr: t.expr })
    }
  }
  for (const v of d.templating?.list ?? []) {
    if (v.type !== 'query') continue
    const q = typeof v.query === 'string' ? v.query : v.query?.query
    if (q == null) throw new Error(`${file}: variable ${v.name} has no query`)
    const labelValues = /^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$/s.exec(q)
    out.push({ where: `${file}: variable ${v.name}`, expr: labelValues?.[1] ?? q })
  }
  return out
}

interface RuleFile {
  groups: { name: string; rules: { record?: string; alert?: string; expr: string }[] }[]
}

/** The expressions and recorded names of deploy/rules.yml. */
export async function loadRules(): Promise<{ queries: Query[]; recorded: string[] }> {
  const file = parseYaml(await readFile(RULES_YML, 'utf8')) as RuleFile
  const queries: Query[] = []
  const recorded: string[] = []
  for (const g of file.groups) {
    for (const r of g.rules) {
      const name = r.record ?? r.alert
      queries.push({ where: `rules.yml: group ${g.name} rule ${name}`, expr: r.expr })
      if (r.record != null) recorded.push(r.record)
    }
  }
  return { queries, recorded }
}

/**
 * The metric names an expression selects. Throws on a syntax error, and on a selector
 * whose metric cannot be told statically (a regex on `__name__`), since such a reference
 * could not be checked.
 */
export function metricNames(expr: string): string[] {
  const text = substituteGrafanaMacros(expr)
  const tree = parser.parse(text)
  const names = new Set<string>()
  const problems: string[] = []
  const cursor = tree.cursor()
  do {
    const node = cursor.node
    if (node.type.isError) {
      problems.push(`syntax error at ${node.from}: "${text.slice(node.from, node.from + 20)}"`)
    } else if (node.type.name === 'VectorSelector') {
      const identifier = node.getChild('Identifier')
      let name = identifier != null ? text.slice(identifier.from, identifier.to) : undefined
      for (const m of node.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? []) {
        const label = m.getChild('LabelName')
        if (label == null || text.slice(label.from, label.to) !== '__name__') continue
        const op = m.getChild('MatchOp')
        const value = m.getChild('StringLiteral')
        if (op?.getChild('EqlSingle') == null || value == null) {
          problems.push(`"${text.slice(node.from, node.to)}" matches __name__ by pattern`)
        } else {
          name = JSON.parse(text.slice(value.from, value.to).replace(/^'|'$/g, '"'))
        }
      }
      if (name == null) problems.push(`"${text.slice(node.from, node.to)}" names no metric`)
      else names.add(name)
    }
  } while (cursor.next())
  if (problems.length > 0) throw new Error(`${problems.join('; ')} in: ${expr}`)
  return [...names]
}
