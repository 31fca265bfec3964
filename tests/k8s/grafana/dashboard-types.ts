// Types that a dashboard *file* (JSON) must satisfy, built from Grafana's own generated schema types
// (@grafana/schema). tests/k8s/test_dashboard_schema.py writes the dashboard as a TypeScript module that
// imports these and runs `tsc --strict --noEmit`.
import type { Dashboard, FieldConfig, FieldConfigSource, Panel, RowPanel } from '@grafana/schema';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as stateTimeline from '@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

// JSON spells an enum member by its value: `"absolute"`, not `ThresholdsMode.Absolute`. String enums
// become the union of their values (template literal types); numeric enums already accept numbers.
// Optionality and required fields are kept as Grafana declares them.
export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// Panel options and custom field config as stored: Grafana merges them over the plugin's defaults
// when it loads the panel, so any option may be left out, but whatever is there must have the
// plugin's type, and a key the plugin does not know is an error (excess property check).
export type Stored<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]?: Stored<T[K]> }
        : T;

// A panel of plugin `Type` with its `Options`, and its `Custom` field config (`never`: the plugin
// has none, so `fieldConfig.defaults.custom` must be absent).
export type PluginPanel<Type extends string, Options, Custom> = Omit<Json<Panel>, 'type' | 'options' | 'fieldConfig'> & {
  type: Type;
  options?: Stored<Options>;
  fieldConfig?: Omit<Json<FieldConfigSource>, 'defaults'> & {
    defaults: Omit<Json<FieldConfig>, 'custom'> & { custom?: Stored<Custom> };
  };
};

export type TimeSeriesPanel = PluginPanel<'timeseries', timeseries.Options, timeseries.FieldConfig>;
export type StatPanel = PluginPanel<'stat', stat.Options, never>;
export type BarGaugePanel = PluginPanel<'bargauge', bargauge.Options, never>;
export type TablePanel = PluginPanel<'table', table.Options, table.FieldConfig>;
export type StateTimelinePanel = PluginPanel<'state-timeline', stateTimeline.Options, stateTimeline.FieldConfig>;
export type Row = Omit<Json<RowPanel>, 'panels'> & { type: 'row'; panels: TypedPanel[] };

// Every panel type the dashboard may use; another type is an error until its plugin types are added.
export type TypedPanel = TimeSeriesPanel | StatPanel | BarGaugePanel | TablePanel | StateTimelinePanel;

// The dashboard model. `__inputs`, `__elements` and `__requires` belong to the export envelope that
// Dashboards -> Import reads; they are typed here, not by the Dashboard model.
export type DashboardFile = Omit<Json<Dashboard>, 'panels'> & {
  panels?: Array<TypedPanel | Row>;
  __inputs?: Array<{ name: string; label: string; description?: string; type: 'datasource' | 'constant'; pluginId?: string; pluginName?: string; value?: string }>;
  __elements?: Record<string, unknown>;
  __requires?: Array<{ type: 'grafana' | 'datasource' | 'panel'; id: string; name: string; version: string }>;
};
