// ComfyUI-PD-FGC: show what a PD-FGC node reports (Load Model's info, the synthetic-weights
// warning, alignment warnings of the encoders) on the node itself.
//
// A node returns {"ui": {"text": [text], "pdfgc_warning": [lines]}, "result": ...} (nodes/_common.py
// node_notes); the text
// goes into a read-only box at the bottom of the node, warnings first, and a node with a warning
// turns red. The box is never saved into the workflow's widget values nor sent with a prompt.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const BOX = "pdfgc_notes";

app.registerExtension({
  name: "pdfgc.NodeNotes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("PDFGC_")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      const r = onExecuted?.apply(this, arguments);
      const warnings = message?.pdfgc_warning ?? [];
      const text = message?.text ?? [];
      if (!warnings.length && !text.length) return r;
      let widget = this.widgets?.find((w) => w.name === BOX);
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, BOX, ["STRING", { multiline: true }], app).widget;
        widget.options = { ...(widget.options ?? {}), serialize: false };
        widget.serializeValue = () => undefined;
        if (widget.inputEl) {
          widget.inputEl.readOnly = true;
          widget.inputEl.style.opacity = 0.9;
        }
      }
      widget.value = [...warnings.map((w) => "⚠ " + w), ...text].join("\n");
      if (warnings.length) {
        this.color = "#7a2020";
        this.bgcolor = "#4a1515";
      }
      this.setSize?.([Math.max(this.size[0], 360), this.computeSize()[1]]);
      app.graph?.setDirtyCanvas(true, true);
      return r;
    };
    const onSerialize = nodeType.prototype.onSerialize;
    nodeType.prototype.onSerialize = function (o) {
      onSerialize?.apply(this, arguments);
      const i = this.widgets?.findIndex((w) => w.name === BOX) ?? -1;
      if (i >= 0 && Array.isArray(o.widgets_values)) o.widgets_values.splice(i, 1);
    };
  },
});
