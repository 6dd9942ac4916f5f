// A row's action buttons as one element: native buttons with Material icons instead of eight
// Quasar buttons. A 50-row table then builds and mounts in about two thirds of the time
// (bench "dashboard"). Each button sits in a span carrying its title, so a disabled button
// still says why. A click emits "action" with the action's name.
export default {
  template: `
    <span class="aikore-actions">
      <span v-for="action in actions" :key="action.name" :title="action.title">
        <button type="button" class="aikore-action" :class="action.color" :aria-label="action.label"
                :disabled="!action.enabled" @click="$emit('action', action.name)">
          <i class="material-icons notranslate" aria-hidden="true">{{ action.icon }}</i>
        </button>
      </span>
    </span>`,
  props: {
    running: Boolean,
    open_title: String,
    open_enabled: Boolean,
    view_title: String,
    view_enabled: Boolean,
  },
  computed: {
    actions() {
      const running = this.running;
      return [
        running
          ? { name: "start-stop", icon: "stop", label: "Stop", title: "Stop", color: "text-negative", enabled: true }
          : { name: "start-stop", icon: "play_arrow", label: "Start", title: "Start", color: "text-positive", enabled: true },
        { name: "restart", icon: "restart_alt", label: "Restart", title: "Restart", enabled: running },
        { name: "open", icon: "open_in_new", label: "Open", title: this.open_title, enabled: this.open_enabled },
        { name: "view", icon: "preview", label: "View", title: this.view_title, enabled: this.view_enabled },
        { name: "logs", icon: "article", label: "Logs", title: "Logs", enabled: true },
        { name: "script", icon: "code", label: "Script", title: "Script", enabled: true },
        { name: "terminal", icon: "terminal", label: "Terminal", title: "Terminal", enabled: true },
        { name: "delete", icon: "delete", label: "Delete", title: "Delete", color: "text-negative", enabled: true },
      ];
    },
  },
};
