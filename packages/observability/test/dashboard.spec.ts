import assert from 'node:assert/strict'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { runToEnd, tempDir } from '@mtc/testkit'
import { parse as parseYaml } from 'yaml'
import {
  allPanels,
  type Dashboard,
  DS_PROMETHEUS_UID,
  dashboardQueries,
  JOBS,
  loadDashboards,
  loadRules,
  metricNames,
  PROMETHEUS_YML,
  PROMTOOL_BIN,
  type Query,
  RULES_YML,
  requireBinary,
  substituteGrafanaMacros,
} from './deploy.ts'
import {
  COMPONENT_PREFIXES,
  exportedMetrics,
  exportingMetric,
  type MetricType,
  PROMETHEUS_SYNTHETIC,
  usedMetrics,
} from './exported.ts'

/** promtool parses a config or a rule file in well under a second; generous for CI. */
const PROMTOOL_TIMEOUT_MS = 30_000

let exported: Map<string, MetricType>
let dashboards: Map<string, Dashboard>
let dashboardExprs: Query[]
let ruleExprs: Query[]
let recorded: string[]
let dir: { path: string; remove: () => Promise<void> }

before(async () => {
  exported = await exportedMetrics()
  dashboards = await loadDashboards()
  dashboardExprs = [...dashboards].flatMap(([file, d]) => dashboardQueries(file, d))
  ;({ queries: ruleExprs, recorded } = await loadRules())
  dir = await tempDir('mtc-observability-')
})

after(async () => {
  await dir?.remove()
})

/** The names `queries` reference that no component exports, with where each one is used. */
function unexported(queries: Query[], alsoKnown: Set<string> = new Set()): string[] {
  const missing: string[] = []
  for (const q of queries) {
    for (const name of metricNames(q.expr)) {
      if (PROMETHEUS_SYNTHETIC.has(name) || alsoKnown.has(name)) continue
      if (exportingMetric(name, exported) == null) missing.push(`${name} (${q.where})`)
    }
  }
  return missing
}

describe('metric name extraction', () => {
  it('finds every selector, histogram series and __name__ matcher', () => {
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x=~"$service"}[$__rate_interval])))' +
          ' / on (instance) group_left () b + {__name__="c", job="j"} offset 5m',
      ).sort(),
      ['a_bucket', 'b', 'c'],
    )
  })

  it('rejects what it cannot check: syntax errors and __name__ patterns', () => {
    assert.throws(() => metricNames('sum(rate(a[1m]) by'), /syntax error/)
    assert.throws(() => metricNames('{__name__=~"mtc_.*"}'), /matches __name__ by pattern/)
  })

  it('flags a metric no component exports', () => {
    const fake = [{ where: 'test', expr: 'rate(mtc_proxy_requests_totl[1m]) + mtc_nope_bucket' }]
    assert.deepEqual(unexported(fake), ['mtc_proxy_requests_totl (test)', 'mtc_nope_bucket (test)'])
    // `_bucket` only belongs to a histogram; a counter has no such series.
    assert.equal(exportingMetric('mtc_proxy_requests_total_bucket', exported), undefined)
    assert.equal(
      exportingMetric('mtc_proxy_request_duration_seconds_bucket', exported),
      'mtc_proxy_request_duration_seconds',
    )
  })
})

describe('deploy/grafana dashboards', () => {
  it('exist and have PromQL to check', () => {
    assert.ok(dashboards.size > 0, 'no dashboard in deploy/grafana')
    for (const [file, d] of dashboards) {
      assert.ok(dashboardQueries(file, d).length > 0, `${file} has no queries`)
    }
  })

  it('reference only metrics the components export', () => {
    assert.deepEqual(unexported(dashboardExprs), [])
  })

  it('show every component and the histograms the issue asks for', () => {
    const used = usedMetrics(dashboardExprs, exported)
    for (const [job, prefix] of Object.entries(COMPONENT_PREFIXES)) {
      assert.ok(
        [...used].some((n) => n.startsWith(prefix)),
        `no ${prefix}* metric of ${job} on a dashboard`,
      )
    }
    for (const histogram of [
      'mtc_ping_monitor_probe_rtt_seconds',
      'mtc_proxy_request_duration_seconds',
      'mtc_allocator_allocation_duration_seconds',
      'mtc_hl_operation_duration_seconds',
    ]) {
      assert.ok(used.has(histogram), `${histogram} is on no dashboard`)
    }
  })

  it('take their data source from the DS_PROMETHEUS input', () => {
    for (const [file, d] of dashboards) {
      assert.ok(d.uid != null && d.title != null, `${file}: uid and title`)
      assert.ok(
        d.__inputs?.some((i) => i.name === 'DS_PROMETHEUS' && i.pluginId === 'prometheus'),
        `${file}: no DS_PROMETHEUS input`,
      )
      assert.ok(
        d.templating?.list?.some((v) => v.name === 'DS_PROMETHEUS' && v.type === 'datasource'),
        `${file}: no DS_PROMETHEUS variable (for file provisioning)`,
      )
      const ids = new Set<number>()
      for (const p of allPanels(d) as (ReturnType<typeof allPanels>[number] & {
        id: number
        type: string
        datasource?: { uid?: string }
        targets?: { datasource?: { uid?: string } }[]
        gridPos: { x: number; w: number }
      })[]) {
        assert.ok(!ids.has(p.id), `${file}: panel id ${p.id} twice`)
        ids.add(p.id)
        assert.ok(p.gridPos.x + p.gridPos.w <= 24, `${file}: "${p.title}" is wider than the grid`)
        if (p.type === 'row') continue
        assert.equal(p.datasource?.uid, DS_PROMETHEUS_UID, `${file}: "${p.title}" data source`)
        for (const t of p.targets ?? []) assert.equal(t.datasource?.uid, DS_PROMETHEUS_UID)
      }
    }
  })

  it('parse with Prometheus’ own parser (promtool, as recording rules)', async () => {
    // promtool has no "check expression"; a rule file of the queries is checked instead.
    const rules = {
      groups: [
        {
          name: 'dashboard',
          rules: dashboardExprs.map((q, i) => ({
            record: `dashboard_query_${i}`,
            expr: substituteGrafanaMacros(q.expr),
          })),
        },
      ],
    }
    const file = join(dir.path, 'dashboard-queries.yml')
    await writeFile(file, JSON.stringify(rules, null, 2)) // JSON is YAML
    const r = await runToEnd(requireBinary(PROMTOOL_BIN), ['check', 'rules', file], {
      timeoutMs: PROMTOOL_TIMEOUT_MS,
    })
    assert.equal(r.code, 0, r.stdout + r.stderr)
  })
})

describe('deploy/rules.yml', () => {
  it('references only metrics the components export', () => {
    assert.ok(ruleExprs.length > 0)
    assert.deepEqual(unexported(ruleExprs, new Set(recorded)), [])
  })

  it('records names in the level:metric:operations form', () => {
    for (const name of recorded) assert.match(name, /^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$/)
  })

  it('passes promtool check rules', async () => {
    const r = await runToEnd(requireBinary(PROMTOOL_BIN), ['check', 'rules', RULES_YML], {
      timeoutMs: PROMTOOL_TIMEOUT_MS,
    })
    assert.equal(r.code, 0, r.stdout + r.stderr)
  })
})

describe('deploy/prometheus.yml', () => {
  it('passes promtool check config (its rule files included)', async () => {
    const r = await runToEnd(requireBinary(PROMTOOL_BIN), ['check', 'config', PROMETHEUS_YML], {
      timeoutMs: PROMTOOL_TIMEOUT_MS,
    })
    assert.equal(r.code, 0, r.stdout + r.stderr)
    assert.match(r.stdout + r.stderr, /1 rule files found/)
  })

  it('discovers the targets through the bootstrap and names each job after the component', async () => {
    const config = parseYaml(await readFile(PROMETHEUS_YML, 'utf8')) as {
      scrape_configs: {
        http_sd_configs?: { url: string }[]
        relabel_configs?: {
          source_labels?: string[]
          target_label?: string
          replacement?: string
        }[]
      }[]
    }
    assert.equal(config.scrape_configs.length, 1)
    const [job] = config.scrape_configs
    const sd = (job.http_sd_configs ?? []).map((c) => new URL(c.url))
    assert.deepEqual(
      sd.map((u) => [u.port, u.pathname]),
      [[String(JOBS['mtc-ping-monitor']), '/sd']],
      'the bootstrap’s /sd on its default metrics port',
    )
    // job = mtc-<role>: the names the rules and the dashboard select on.
    const toJob = job.relabel_configs?.find((r) => r.target_label === 'job')
    assert.deepEqual(toJob?.source_labels, ['__meta_mtc_role'])
    for (const name of Object.keys(JOBS)) {
      const role = name.replace(/^mtc-/, '')
      assert.equal(toJob?.replacement?.replace('$1', role), name)
    }
  })
})
