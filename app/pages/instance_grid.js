// The instance table as one element: a Quasar table fed with row data (see instance_table.py).
// Rows arrive once with the page; afterwards the server changes one row at a time
// ("upsert", "remove", "usage"), so a status change costs one row's JSON whatever the
// number of instances. Only the rows on screen are rendered (virtual scrolling: the rows in
// view and half a view more on each side, not Quasar's default of a whole view); sorting
// and the filter run here, in the browser. Edits are drafts kept here until Update.
const MINOR = "aikore-minor";
const COLUMNS = [
  { name: "name", label: "Name", field: "name", sortable: true, align: "left" },
  { name: "blueprint", label: "Blueprint", field: "blueprint", sortable: true, align: "left", classes: MINOR, headerClasses: MINOR },
  { name: "gpus", label: "GPUs", field: "gpus", align: "left", classes: MINOR, headerClasses: MINOR,
    title: "CUDA_VISIBLE_DEVICES for the instance, e.g. 0 or 0,1 (empty: all)" },
  { name: "autostart", label: "Auto", field: "autostart", sortable: true, align: "left", classes: MINOR, headerClasses: MINOR,
    title: "Start with the panel" },
  { name: "persistent", label: "Pers.", field: "persistent", align: "left", classes: MINOR, headerClasses: MINOR,
    title: "Persistent desktop (Selkies): the app runs in a browser inside the server, streamed to Open and View, so its page survives closing yours; applies at the next start" },
  { name: "status", label: "Status", field: "status", sortable: true, align: "left" },
  { name: "pid", label: "PID · use", field: "pid", align: "left", classes: MINOR, headerClasses: MINOR,
    title: "Process ID; CPU, RAM and VRAM of its whole process tree" },
  { name: "port", label: "Port", field: "port", sortable: true, align: "left",
    title: "Public port, and whether it is mapped now (Activate)" },
  { name: "access", label: "Access", field: "access", sortable: true, align: "left", classes: MINOR, headerClasses: MINOR },
  { name: "restart_policy", label: "Restart", field: "restart_policy", align: "left", classes: MINOR, headerClasses: MINOR,
    title: "Restart policy when the app exits with an error" },
  { name: "actions", label: "Actions", field: "id", align: "left" },
];
// The classes Quasar's q-td gives each cell: plain cells are cheaper to render than one
// component each (11 a row).
const CELLS = Object.fromEntries(COLUMNS.map((col) => [col.name, `q-td text-${col.align}${col.classes ? " " + col.classes : ""}`]));
// The name and the actions stay in view when a narrow window scrolls the table sideways.
CELLS.name += " aikore-stick-left";
CELLS.actions += " aikore-stick-right";
COLUMNS[0].headerClasses = "aikore-stick-left";
COLUMNS[COLUMNS.length - 1].headerClasses = "aikore-stick-right";
const EDITABLE = ["name", "gpus", "autostart", "persistent", "port", "restart_policy"];

export default {
  template: `
    <q-table ref="table" class="aikore-grid" :rows="list" :columns="columns" row-key="id" dense flat
             virtual-scroll :virtual-scroll-item-size="36" :virtual-scroll-sticky-size-start="30"
             :virtual-scroll-slice-ratio-before="0.5" :virtual-scroll-slice-ratio-after="0.5"
             :rows-per-page-options="[0]" :pagination="{rowsPerPage: 0, sortBy: 'name'}" hide-bottom
             :filter="filter" :filter-method="filterRows" :data-count="list.length"
             @click="clicked" @input="typed" @change="picked" @keydown="keyed">
      <template v-slot:top>
        <input class="aikore-filter" type="search" placeholder="Filter: name, blueprint, status, port"
               aria-label="Filter instances" :value="filter" @input="filter = $event.target.value">
        <span class="text-xs opacity-60 q-ml-sm aikore-count">{{ countText }}</span>
        <span v-if="filter && !matching" class="text-xs text-warning q-ml-sm aikore-no-match">No instance matches “{{ filter }}”</span>
      </template>
      <template v-slot:header-cell="props">
        <q-th :props="props" :title="props.col.title || ''">{{ props.col.label }}</q-th>
      </template>
      <template v-slot:body="props">
        <tr class="q-tr" :class="{ 'aikore-selected': props.row.id === current }" :data-id="props.row.id" :key="props.row.id">
          <td :class="[cells.name, { 'aikore-satellite': !!props.row.parent }]">
            <input class="aikore-cell aikore-name" :value="value(props.row, 'name')" :disabled="!props.row.renamable"
                   :style="{ '--chars': nameChars }"
                   :title="props.row.renamable ? 'Name' : props.row.rename_title" aria-label="Name" data-edit="name">
            <div v-if="props.row.parent" class="text-xs opacity-60">satellite of {{ props.row.parent }}</div>
          </td>
          <td :class="cells.blueprint">
            <div class="font-medium">{{ props.row.blueprint }}</div>
            <div class="text-xs opacity-60">{{ props.row.category }}</div>
          </td>
          <td :class="cells.gpus">
            <input class="aikore-cell aikore-narrow" :value="value(props.row, 'gpus')" aria-label="GPUs" data-edit="gpus">
          </td>
          <td :class="cells.autostart">
            <input type="checkbox" :checked="value(props.row, 'autostart')" aria-label="Start with the panel"
                   data-edit="autostart">
          </td>
          <td :class="cells.persistent">
            <input type="checkbox" :checked="value(props.row, 'persistent')" aria-label="Persistent"
                   :title="props.row.persistent_title" data-edit="persistent">
          </td>
          <td :class="cells.status">
            <span class="aikore-status">
              <q-spinner v-if="props.row.busy" size="1em"></q-spinner>
              <q-badge :color="props.row.color">{{ props.row.status }}</q-badge>
            </span>
          </td>
          <td :class="cells.pid">
            <div>{{ props.row.pid }}</div>
            <div class="text-xs opacity-60 whitespace-nowrap">{{ props.row.usage }}</div>
          </td>
          <td :class="cells.port">
            <span class="aikore-port">
              <input class="aikore-cell aikore-narrow" type="number" :value="value(props.row, 'port')"
                     aria-label="Public port" :title="props.row.port_title" data-edit="port">
              <i v-if="props.row.port_shared" class="material-icons notranslate aikore-shared aikore-minor"
                 :title="props.row.port_shared" aria-label="Shared port">group_work</i>
              <span :title="props.row.activate_title">
                <button type="button" class="aikore-activate" :class="'bg-' + props.row.activate_color"
                        :disabled="!props.row.activate_enabled" data-act="activate">{{ props.row.activate_label }}</button>
              </span>
            </span>
          </td>
          <td :class="cells.access">
            <select class="aikore-cell aikore-access" :value="props.row.access" aria-label="Access"
                    :key="props.row.id + ':' + (revisions[props.row.id] || 0)" data-edit="access">
              <option v-for="option in accessOptions" :key="option.value" :value="option.value">{{ option.label }}</option>
            </select>
            <div v-if="props.row.open_url" class="aikore-url">
              <a :href="props.row.open_url" target="_blank" rel="noopener" :title="props.row.open_url">{{ props.row.open_url }}</a>
              <button type="button" class="aikore-action aikore-copy" title="Copy the link" aria-label="Copy the link"
                      data-act="copy">
                <i class="material-icons notranslate" aria-hidden="true">{{ copied === props.row.id ? "check" : "content_copy" }}</i>
              </button>
            </div>
          </td>
          <td :class="cells.restart_policy">
            <select class="aikore-cell" :value="value(props.row, 'restart_policy')" aria-label="Restart policy"
                    data-edit="restart_policy">
              <option v-for="policy in policies" :key="policy" :value="policy">{{ policy }}</option>
            </select>
          </td>
          <td :class="cells.actions">
            <span class="aikore-actions">
              <span v-for="action in actions(props.row)" :key="action.name" :title="action.title">
                <button type="button" class="aikore-action" :class="action.enabled ? action.color : ''" :aria-label="action.label"
                        :disabled="!action.enabled" :data-act="action.name">
                  <i class="material-icons notranslate" aria-hidden="true">{{ action.icon }}</i>
                </button>
              </span>
              <button type="button" class="aikore-action aikore-more" aria-label="More actions"
                      title="Clone, satellite, environment" data-act="more">
                <i class="material-icons notranslate" aria-hidden="true">more_vert</i>
                <q-menu v-if="menu === props.row.id" :model-value="true" auto-close @hide="closed(props.row.id)"
                        @vue:before-unmount="closed(props.row.id)">
                  <q-list dense style="min-width: 13rem">
                    <q-item v-for="item in more(props.row)" :key="item.name" clickable :disable="!item.enabled"
                            :title="item.title" @click="act(props.row, item.name)">
                      <q-item-section>{{ item.label }}</q-item-section>
                    </q-item>
                  </q-list>
                </q-menu>
              </button>
            </span>
            <div v-if="changed(props.row)" class="aikore-edits">
              <button type="button" class="aikore-update" data-act="save">Update</button>
              <button type="button" class="aikore-revert" data-act="revert" title="Drop the changes in this row">Revert</button>
            </div>
          </td>
        </tr>
      </template>
    </q-table>`,
  props: {
    rows: Array,
    defaults: Object, // the values a row leaves out (instance_rows.ROW_DEFAULTS)
    selected: Number,
    access_options: Array,
    policies: Array,
  },
  data() {
    // menu: the row whose "More actions" menu is open; the menu is made on demand, not one per row.
    return { byId: this.index(this.rows), drafts: {}, filter: "", current: this.selected, columns: COLUMNS, cells: CELLS, copied: null, revisions: {}, menu: null };
  },
  mounted() {
    // Quasar's virtual scroll draws its first rows only after a 35 ms debounce and one more
    // frame; asking for the top now draws them in the first frame, before the first paint.
    if (this.list.length) this.$refs.table.scrollTo(0);
    // Once the first rows are painted (the frame after the one that drew them), the server
    // sends the tools and charts, whose big libraries would otherwise compete with the table.
    const painted = () => requestAnimationFrame(() => setTimeout(() => this.$emit("shown")));
    const wait = () => (!this.list.length || this.$el.querySelector("tr[data-id]") ? painted() : requestAnimationFrame(wait));
    requestAnimationFrame(wait);
  },
  computed: {
    list() {
      return Object.values(this.byId);
    },
    // One width for every name field (the longest name, 8 to 30 characters): columns do not
    // shift as rows scroll into view.
    nameChars() {
      return Math.min(Math.max(8, ...this.list.map((row) => row.name.length)), 30);
    },
    accessOptions() {
      return this.access_options;
    },
    // How many rows the filter keeps (the table filters the same way).
    matching() {
      return this.filter ? this.filterRows(this.list, this.filter).length : this.list.length;
    },
    countText() {
      const total = `${this.list.length} instance${this.list.length === 1 ? "" : "s"}`;
      return this.filter ? `${this.matching} of ${total}` : total;
    },
  },
  watch: {
    rows(rows) {
      this.byId = this.index(rows);
    },
    selected(value) {
      this.current = value;
    },
  },
  methods: {
    index(rows) {
      const byId = {};
      for (const row of rows || []) byId[row.id] = { ...this.defaults, ...row };
      return byId;
    },
    // -- called by the server ------------------------------------------------------------
    upsert(row) {
      this.byId[row.id] = Object.assign(this.byId[row.id] || {}, this.defaults, row);
      // A new element for the access choice: also shows the stored pattern again after a refusal.
      this.revisions[row.id] = (this.revisions[row.id] || 0) + 1;
    },
    remove(id) {
      delete this.byId[id];
      delete this.drafts[id];
      this.closed(id);
    },
    // A row's menu closed (or its row left the screen): forgotten, unless another row's is open by now.
    closed(id) {
      if (this.menu === id) this.menu = null;
    },
    usage(texts) {
      for (const [id, text] of Object.entries(texts)) if (this.byId[id]) this.byId[id].usage = text;
    },
    saved(id) {
      delete this.drafts[id];
    },
    // Picked by the server (a row's action, or the last visit's choice restored): the row is
    // brought into view when it is not on screen.
    select(id) {
      this.current = id;
      this.$nextTick(() => this.reveal(id));
    },
    reveal(id) {
      const table = this.$refs.table;
      const scroller = this.$el.querySelector(".q-table__middle");
      const tr = this.$el.querySelector(`tr[data-id="${id}"]`);
      if (!table || !scroller) return;
      if (tr) {
        const box = tr.getBoundingClientRect();
        const view = scroller.getBoundingClientRect();
        if (box.top >= view.top + 30 && box.bottom <= view.bottom) return; // under the sticky header counts as hidden
      }
      const index = (table.computedRows || []).findIndex((row) => row.id === id);
      if (index >= 0) table.scrollTo(index, "center-force");
    },
    // -- events of the rows: one listener each on the table, not one per control ------------
    rowOf(element) {
      const tr = element.closest("tr[data-id]");
      return tr ? this.byId[tr.dataset.id] : undefined;
    },
    // A button with data-act does its action; a click elsewhere in a row shows the instance.
    clicked(event) {
      const row = this.rowOf(event.target);
      if (!row) return;
      const control = event.target.closest("[data-act]");
      if (control?.disabled) return;
      const name = control?.dataset.act;
      if (name === undefined) this.pick(row);
      else if (name === "activate") this.send("activate", row);
      else if (name === "copy") this.copy(row);
      else if (name === "save") this.save(row);
      else if (name === "revert") this.saved(row.id);
      else if (name === "more") this.menu = row.id;
      else this.act(row, name);
    },
    // Text fields follow each keystroke ("input"); checkboxes and choices their "change".
    typed(event) {
      const { target } = event;
      const field = target.dataset?.edit;
      if (!field || target.type === "checkbox" || target.tagName === "SELECT") return;
      const row = this.rowOf(target);
      if (!row) return;
      const number = field === "port";
      this.edit(row, field, number ? (target.value === "" ? null : Number(target.value)) : target.value);
    },
    picked(event) {
      const { target } = event;
      const field = target.dataset?.edit;
      const row = field && this.rowOf(target);
      if (!row) return;
      if (target.type === "checkbox") this.edit(row, field, target.checked);
      else if (field === "access") this.choose(row, target.value);
      else if (target.tagName === "SELECT") this.edit(row, field, target.value);
    },
    // Enter in a row's text field saves the row's changes (as Update does); Escape drops them (Revert).
    keyed(event) {
      const { target } = event;
      if (!target.dataset?.edit || target.tagName !== "INPUT" || target.type === "checkbox") return;
      const row = this.rowOf(target);
      if (!row) return;
      if (event.key === "Enter" && this.changed(row)) {
        event.preventDefault();
        // Not a number the field can read (e.g. "9000e": the browser says ""), nor a held key.
        if (!event.repeat && !target.validity?.badInput) this.save(row);
      } else if (event.key === "Escape" && this.drafts[row.id]) {
        this.saved(row.id);
      }
    },
    // -- drafts --------------------------------------------------------------------------
    value(row, field) {
      const draft = this.drafts[row.id];
      return draft && field in draft ? draft[field] : row[field];
    },
    edit(row, field, value) {
      const draft = (this.drafts[row.id] = this.drafts[row.id] || {});
      if (value === row[field]) delete draft[field];
      else draft[field] = value;
      if (!Object.keys(draft).length) delete this.drafts[row.id];
    },
    changed(row) {
      const draft = this.drafts[row.id];
      return !!draft && EDITABLE.some((field) => field in draft && draft[field] !== row[field]);
    },
    save(row) {
      this.$emit("save", { id: row.id, changes: { ...this.drafts[row.id] } });
    },
    // -- actions -------------------------------------------------------------------------
    actions(row) {
      const stop = row.running;
      return [
        { name: "start-stop", icon: stop ? "stop" : "play_arrow", label: stop ? "Stop" : "Start",
          title: row.start_stop_title || (stop ? "Stop" : "Start"), color: stop ? "text-negative" : "text-positive",
          enabled: row.can_start_stop },
        { name: "restart", icon: "restart_alt", label: "Restart", title: row.can_restart ? "Restart" : "Not running",
          enabled: row.can_restart },
        { name: "open", icon: "open_in_new", label: "Open", title: row.open_title, enabled: !!row.open_url },
        { name: "view", icon: "preview", label: "View", title: row.view_title, enabled: row.can_view },
        { name: "logs", icon: "article", label: "Logs", title: "Logs", enabled: true },
        { name: "script", icon: "code", label: "Script", title: "Script", enabled: true },
        { name: "terminal", icon: "terminal", label: "Terminal", title: "Terminal", enabled: true },
        { name: "delete", icon: "delete", label: "Delete", title: row.delete_title || "Delete", color: "text-negative",
          enabled: row.can_delete },
      ];
    },
    // The row's menu: clone, satellite and environment actions (titles say why one is off).
    more(row) {
      const family = row.family || {};
      return [
        { name: "clone", label: "Clone…", enabled: !!family.can_clone, title: family.clone_title || "" },
        { name: "satellite", label: "New satellite…", enabled: !!family.can_satellite, title: family.satellite_title || "" },
        { name: "rebuild", label: "Rebuild environment…", enabled: !!family.own_env, title: family.env_title || "" },
        { name: "versions", label: "Versions", enabled: !!family.can_check, title: "" },
        { name: "pins", label: "Pins…", enabled: !!family.own_env, title: family.env_title || "" },
      ];
    },
    pick(row) {
      if (this.current !== row.id) this.$emit("pick", { id: row.id });
    },
    act(row, name) {
      this.$emit("action", { id: row.id, name });
    },
    send(event, row) {
      this.$emit(event, { id: row.id });
    },
    choose(row, value) {
      if (value !== row.access) this.$emit("access", { id: row.id, value });
    },
    async copy(row) {
      // The clipboard API exists only on https and localhost; elsewhere the older way.
      try {
        await navigator.clipboard.writeText(row.open_url);
      } catch (error) {
        const area = document.createElement("textarea");
        area.value = row.open_url;
        document.body.appendChild(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      this.copied = row.id;
      setTimeout(() => { if (this.copied === row.id) this.copied = null; }, 1500);
    },
    filterRows(rows, terms) {
      const needle = terms.toLowerCase();
      return rows.filter((row) =>
        [row.name, row.blueprint, row.category, row.status, String(row.port), row.access_label]
          .some((text) => (text || "").toLowerCase().includes(needle)),
      );
    },
  },
};
