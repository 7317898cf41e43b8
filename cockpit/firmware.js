/* The Firmware page of the web console (issue 19).
 *
 * Reads livefwd's native D-Bus API (org.livefw.Daemon1, dbus/*.xml) on the system bus:
 * the device list from the ObjectManager (GetManagedObjects, InterfacesAdded/Removed),
 * every change from PropertiesChanged (no polling). Privileged calls go through
 * Cockpit's administrative access: every channel asks for superuser "try", so with
 * administrative access on they run in the root bridge, and livefwd's polkit check
 * sees root, as for the CLI run with sudo. Cockpit 287 cannot pass a file descriptor
 * over D-Bus (its "h" is receive-only), so Install copies the upload to a private
 * directory with cockpit.file and runs `livefw install FILE --json` (README, "Web
 * console (Cockpit)").
 *
 * Everything shown comes from the daemon or the firmware: it is put in the page as text
 * (textContent), never as HTML.
 */
(function () {
    "use strict";

    const BUS_NAME = "org.livefw.Daemon1";
    const MANAGER_PATH = "/org/livefw/Daemon1";
    const DEVICES_PATH = "/org/livefw/Daemon1/devices";
    const MANAGER = "org.livefw.Daemon1.Manager";
    const DEVICE = "org.livefw.Daemon1.Device";
    const TELEMETRY = "org.livefw.Daemon1.Telemetry";
    const PFRU = "org.livefw.Daemon1.Pfru";
    const FWCTL = "org.livefw.Daemon1.Fwctl";
    const LIVEUPDATE = "org.livefw.Daemon1.LiveUpdate";
    const PROPERTIES = "org.freedesktop.DBus.Properties";
    const OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager";
    const SYSTEMD = "org.freedesktop.systemd1";
    const SYSTEMD_PATH = "/org/freedesktop/systemd1";
    const SYSTEMD_MANAGER = "org.freedesktop.systemd1.Manager";
    const SYSTEMD_UNIT = "org.freedesktop.systemd1.Unit";
    const SYSTEMD_TIMER = "org.freedesktop.systemd1.Timer";
    const SYSTEMD_SERVICE = "org.freedesktop.systemd1.Service";

    /* livefwd's default [install] max_payload_size; the daemon checks it again. */
    const MAX_UPLOAD = 256 * 1024 * 1024;
    /* long calls reply when done (an activation can take minutes) */
    const LONG_CALL = { timeout: 15 * 60 * 1000 };
    const TELEMETRY_INTERVAL = 2000;
    const TELEMETRY_MAX_CHARS = 256 * 1024;
    const HISTORY_LIMIT = 500;

    const FLAG_WORDS = {
        "updatable": "updatable",
        "needs-activation": "waiting for activation",
        "needs-reboot": "applied at the next reboot",
        "activation-capable": "activates at runtime",
        "may-reset-cpu": "may reset CPUs",
        "cpu-rendezvous": "stops all CPUs to activate",
        "internal": "part of the platform",
        "locked": "locked",
        "signed-payload": "signed payloads only",
        "unsigned-payload": "accepts unsigned payloads",
        "can-cancel": "can cancel",
    };

    /* the manager's and a device's Status (daemon/state.py Status) */
    const STATUS_WORDS = {
        "idle": "idle",
        "loading": "loading the payload",
        "waiting-for-auth": "waiting for authorization",
        "device-busy": "waiting for the device",
        "device-read": "reading from the device",
        "device-write": "writing the firmware",
        "device-verify": "verifying",
        "device-activate": "activating",
        "scheduling": "scheduling",
        "shutdown": "livefwd is shutting down",
    };

    const ERROR_WORDS = {
        NotFound: "Not found",
        InvalidFile: "The file was refused",
        InvalidArgument: "Invalid argument",
        NotSupported: "Not supported",
        AuthFailed: "Not authorized",
        Busy: "Busy",
        VersionNewer: "A newer version is installed",
        VersionSame: "This version is installed",
        NothingToDo: "Nothing to do",
        NoSpace: "No space",
        ActivationFailed: "Activation failed",
        PermissionDenied: "Permission denied",
        Timeout: "Timed out",
        Internal: "Internal error in livefwd",
    };

    const manifest = (cockpit.manifests && cockpit.manifests.livefw) || {};
    const config = Object.assign(
        { unit_dir: "/etc/systemd/system", timer: "livefw-activate.timer", service: "livefw-activate.service" },
        manifest.config || {});

    const state = {
        devices: {},          /* path -> { props, ifaces: {iface: props} } */
        manager: {},
        history: [],
        admin: false,         /* administrative access (or root) */
        adminKnown: false,
        busy: false,          /* an action of this page is in flight */
        expanded: {},         /* device id -> details shown */
        details: {},          /* device id -> extra details read on demand */
        telemetry: { cursor: null, timer: null, device: null, reading: false },
        timer: { unit: null, timerPath: null, servicePath: null, props: {}, service: {} },
    };

    const livefwd = cockpit.dbus(BUS_NAME, { bus: "system", superuser: "try" });
    const systemd = cockpit.dbus(SYSTEMD, { bus: "system", superuser: "try" });
    const permission = cockpit.permission({ admin: true });

    function $(id) {
        return document.getElementById(id);
    }

    function el(tag, attrs, ...children) {
        const node = document.createElement(tag);
        for (const [key, value] of Object.entries(attrs || {})) {
            if (value === undefined || value === null || value === false)
                continue;
            if (key === "class")
                node.className = value;
            else if (key === "text")
                node.textContent = value;
            else if (key === "onclick")
                node.addEventListener("click", value);
            else
                node.setAttribute(key, value === true ? "" : String(value));
        }
        for (const child of children) {
            if (child === null || child === undefined)
                continue;
            node.append(typeof child === "string" ? document.createTextNode(child) : child);
        }
        return node;
    }

    function show(node, visible) {
        node.classList.toggle("fw-hidden", !visible);
    }

    /* cockpit.dbus gives variants as {t: signature, v: value}; a{sv} as an object of them */
    function unvariant(value) {
        if (value && typeof value === "object" && "t" in value && "v" in value && Object.keys(value).length === 2)
            return value.v;
        return value;
    }

    function unvariantDict(dict) {
        const out = {};
        for (const [key, value] of Object.entries(dict || {}))
            out[key] = unvariant(value);
        return out;
    }

    /* ------------------------------------------------------------------ errors */

    /* A D-Bus error, a spawn failure with livefw's JSON error line, or anything else,
     * as one sentence: what failed and the daemon's message (never the bare name). */
    function describeError(error) {
        if (!error)
            return "unknown error";
        if (error.exit_status !== undefined || error.exit_signal !== undefined) {
            const parsed = parseCliError(error.message || "");
            if (parsed)
                return parsed;
            if (error.problem === "not-found")
                return "livefw is not installed on this machine";
            return (error.message || "").trim() || ("livefw exited with status " + error.exit_status);
        }
        const name = error.name || "";
        const message = (error.message || String(error)).trim();
        if (name.startsWith("org.livefw.Daemon1.Error.")) {
            const short = name.slice("org.livefw.Daemon1.Error.".length);
            const words = ERROR_WORDS[short] || short;
            return message ? words + ": " + message : words;
        }
        if (name === "org.freedesktop.DBus.Error.ServiceUnknown" || name === "org.freedesktop.DBus.Error.NameHasNoOwner")
            return "livefwd is not running (" + message + ")";
        if (error.problem === "access-denied")
            return "Not permitted: turn on administrative access";
        return message || name || String(error);
    }

    /* `livefw ... --json` reports an error as one JSON line on stderr:
     * {"error": name, "message": ..., "exit_code": n} */
    function parseCliError(stderr) {
        const lines = stderr.trim().split("\n").reverse();
        for (const line of lines) {
            if (!line.startsWith("{"))
                continue;
            try {
                const parsed = JSON.parse(line);
                if (parsed && typeof parsed.message === "string") {
                    const words = ERROR_WORDS[parsed.error] || parsed.error || "livefw";
                    return words + ": " + parsed.message;
                }
            } catch (_e) {
                /* not our line */
            }
        }
        return null;
    }

    function reportError(what, error) {
        const text = what + ": " + describeError(error);
        console.warn(text, error);
        const close = el("button", { class: "fw-btn fw-btn-link fw-close", type: "button", "aria-label": "Dismiss", text: "×" });
        const alert = el("div", { class: "fw-alert fw-alert-danger", role: "alert" }, el("span", { text }), close);
        close.addEventListener("click", () => alert.remove());
        const box = $("errors");
        box.prepend(alert);
        while (box.children.length > 5)
            box.lastChild.remove();
    }

    /* ------------------------------------------------------------ privileges */

    const NEEDS_ADMIN = "Needs administrative access: turn it on with \u201cLimited access\u201d in the " +
        "web console's top bar (Cockpit cannot answer livefw's polkit password prompts itself)";

    function applyPermission() {
        state.adminKnown = permission.allowed !== null;
        state.admin = permission.allowed === true;
        const banner = $("access");
        if (state.adminKnown && !state.admin) {
            banner.textContent = "Read-only: installing, activating, cancelling, telemetry settings and the " +
                "maintenance window need administrative access: turn it on with \u201cLimited access\u201d " +
                "in the web console's top bar (a user with sudo rights). Cockpit cannot answer livefw's " +
                "polkit password prompts itself.";
        }
        show(banner, state.adminKnown && !state.admin);
        renderAll();
    }

    /* why a privileged button is disabled, or null when it may be used */
    function adminReason() {
        if (!state.adminKnown)
            return "checking access";
        if (!state.admin)
            return NEEDS_ADMIN;
        if (state.busy)
            return "another operation of this page is running";
        return null;
    }

    function setButton(button, reason, whyNode) {
        button.disabled = !!reason;
        if (reason)
            button.title = reason;
        else
            button.removeAttribute("title");
        if (whyNode)
            whyNode.textContent = reason && reason !== "checking access" ? reason : "";
    }

    async function runBusy(what, action) {
        state.busy = true;
        renderAll();
        try {
            return await action();
        } catch (error) {
            reportError(what, error);
            return undefined;
        } finally {
            state.busy = false;
            renderAll();
        }
    }

    /* --------------------------------------------------------------- devices */

    function deviceList() {
        return Object.values(state.devices)
            .filter(device => device.ifaces[DEVICE])
            .map(device => device.ifaces[DEVICE])
            .sort((a, b) => (a.Plugin + a.Name).localeCompare(b.Plugin + b.Name));
    }

    function deviceById(id) {
        return state.devices[DEVICES_PATH + "/" + id];
    }

    function flagWords(flags) {
        return (flags || []).map(flag => FLAG_WORDS[flag] || flag).join(", ");
    }

    function lastResult(id) {
        const entry = state.history.find(item => item.DeviceId === id);
        if (!entry)
            return "";
        return entry.Kind + " " + entry.VersionNew + ": " + entry.State + (entry.Reason ? " (" + entry.Reason + ")" : "");
    }

    function activateReason(props) {
        const flags = props.Flags || [];
        if (!flags.includes("activation-capable"))
            return "the firmware cannot activate this device at runtime";
        if (flags.includes("may-reset-cpu"))
            return "activation may reset CPUs, which the kernel refuses: apply it with a reboot";
        if (!flags.includes("needs-activation"))
            return "nothing is waiting for activation";
        return adminReason();
    }

    function cancelReason(props) {
        const flags = props.Flags || [];
        if (!props.VersionPending && !flags.includes("needs-activation") && !flags.includes("needs-reboot"))
            return "nothing is staged";
        if (!flags.includes("can-cancel")) {
            if (props.Plugin === "lfa")
                return "the platform (e.g. the BMC) staged this image; the firmware cannot discard it";
            return "the firmware cannot discard a staged image: it stays staged until it is activated " +
                "or the machine reboots";
        }
        return adminReason();
    }

    function renderDevices() {
        const body = $("devices").querySelector("tbody");
        body.textContent = "";
        const devices = deviceList();
        show($("devices-empty"), devices.length === 0);
        for (const props of devices) {
            const id = props.Id;
            const activate = el("button", { class: "fw-btn fw-btn-primary", type: "button", text: "Activate", "data-action": "activate" });
            setButton(activate, activateReason(props));
            activate.addEventListener("click", () => confirmActivate(id));
            const cancel = el("button", { class: "fw-btn fw-btn-secondary", type: "button", text: "Cancel update", "data-action": "cancel" });
            setButton(cancel, cancelReason(props));
            cancel.addEventListener("click", () => cancelUpdate(id));
            const more = el("button", {
                class: "fw-btn fw-btn-link", type: "button", "data-action": "details",
                "aria-expanded": state.expanded[id] ? "true" : "false",
                text: state.expanded[id] ? "Hide details" : "Details",
            });
            more.addEventListener("click", () => toggleDetails(id));
            const status = props.Status && props.Status !== "idle"
                ? el("div", { class: "fw-muted", text: (STATUS_WORDS[props.Status] || props.Status) + (props.Percentage ? " " + props.Percentage + "%" : "") })
                : null;
            const row = el("tr", { "data-id": id, "data-plugin": props.Plugin },
                el("td", {}, el("div", { class: "fw-name", text: props.Name }),
                    el("div", { class: "fw-muted", text: props.Plugin + (props.Vendor ? " \u00b7 " + props.Vendor : "") })),
                el("td", { class: "fw-version", text: props.Version || "\u2014" }),
                el("td", { class: "fw-pending", text: props.VersionPending || "" }),
                el("td", { class: "fw-flags", text: flagWords(props.Flags) }),
                el("td", { class: "fw-state" }, el("span", { class: "fw-state-" + (props.UpdateState || "none"), text: props.UpdateState || "none" }),
                    props.UpdateError ? el("div", { class: "fw-error-text", text: props.UpdateError }) : null, status),
                el("td", { class: "fw-last", text: lastResult(id) }),
                el("td", { class: "fw-actions" }, activate, cancel, more));
            body.append(row);
            if (state.expanded[id])
                body.append(el("tr", { class: "fw-details-row", "data-details-for": id },
                    el("td", { colspan: "7" }, renderDetails(id))));
        }
    }

    function kv(list) {
        const dl = el("dl", { class: "fw-dl" });
        for (const [key, value] of list) {
            if (value === undefined || value === null || value === "")
                continue;
            dl.append(el("dt", { text: key }), el("dd", { text: String(value) }));
        }
        return dl;
    }

    function hexFlags(text, names) {
        const value = parseInt(text, 16);
        if (Number.isNaN(value))
            return text;
        const words = names.filter(([bit]) => value & bit).map(([, word]) => word);
        return text + (words.length ? " (" + words.join(", ") + ")" : "");
    }

    function renderDetails(id) {
        const device = deviceById(id);
        if (!device)
            return el("div");
        const props = device.ifaces[DEVICE];
        const meta = props.Metadata || {};
        const box = el("div", { class: "fw-details" });
        box.append(el("h3", { text: "Device" }), kv([
            ["Id", props.Id], ["Summary", props.Summary], ["Protocol", props.Protocol],
            ["Physical id", props.PhysicalId], ["GUIDs", (props.Guids || []).join(", ")],
            ["Lowest version", props.VersionLowest],
        ]));
        if (props.Plugin === "uefi_capsule") {
            box.append(el("h3", { text: "ESRT entry" }), kv([
                ["Entry", meta["esrt-entry"]], ["Source", meta["esrt-source"]],
                ["Firmware type", meta["fw-type"]],
                ["Capsule flags", meta["capsule-flags"] && hexFlags(meta["capsule-flags"],
                    [[0x10000, "persist across reset"], [0x20000, "populate system table"], [0x40000, "initiate reset"]])],
                ["Last attempt version", meta["last-attempt-version"]],
                ["Last attempt status", meta["last-attempt-status"]],
                ["Update method", meta["update-method"]], ["ESP", meta.esp],
                ["Capsule on disk", meta["capsule-on-disk"]], ["Secure Boot", meta["secure-boot"]],
                ["EFI loader", meta["efi-loader"]],
            ]));
        } else if (props.Plugin === "pfru") {
            const pfru = device.ifaces[PFRU] || {};
            box.append(el("h3", { text: "PFRU capabilities" }), kv([
                ["Update type", meta["update-type"]],
                ["Update capability", meta["update-capability"] && hexFlags(meta["update-capability"],
                    [[0x1, "code injection"], [0x2, "driver update"], [0x4, "telemetry"]])],
                ["Code injection runtime version", meta["code-rt-version"]],
                ["Driver update runtime version", meta["drv-rt-version"]],
                ["Driver update SVN", meta["drv-svn"]], ["Version gate", meta["version-gate"]],
                ["Firmware version", meta["fw-version"]], ["Platform id", meta["platform-id"]],
                ["OEM id", meta["oem-id"]], ["Update node", meta["device-node"]],
                ["Telemetry node", meta["telemetry-node"]],
                ["_DSM revision set by livefw", pfru.Revision === 0 ? "none (the driver's default)" : pfru.Revision],
            ]));
        } else if (props.Plugin === "lfa") {
            const flags = props.Flags || [];
            box.append(el("h3", { text: "Live Firmware Activation" }), kv([
                ["Image GUID", props.PhysicalId], ["Activation pending", meta["activation-pending"]],
                ["Activation capable", flags.includes("activation-capable") ? "yes" : "no"],
                ["CPU rendezvous", flags.includes("cpu-rendezvous") ? "yes" : "no"],
                ["May reset CPUs", flags.includes("may-reset-cpu") ? "yes" : "no"],
                ["sysfs", meta.sysfs],
            ]));
        } else if (props.Plugin === "fwctl") {
            const fwctl = device.ifaces[FWCTL] || {};
            const info = unvariantDict(fwctl.Info || {});
            const infoRows = Object.entries(info).filter(([key]) => key !== "device-data")
                .map(([key, value]) => ["FWCTL_INFO " + key, value]);
            box.append(el("h3", { text: "fwctl" }), kv([
                ["Node", fwctl.Node || meta.node], ["Device type", fwctl.DeviceType], ["Parent", fwctl.Parent],
                ["Driver", fwctl.Driver], ["PCI address", fwctl.PciAddress], ...infoRows,
            ]));
            if (fwctl.DeviceType === "cxl")
                box.append(renderCxlFeatures(id));
        } else if (props.Plugin === "liveupdate") {
            box.append(el("h3", { text: "Live Update Orchestrator" }), kv([
                ["Device file", meta["device-file"]], ["systemd fd store", meta["fd-store"]],
                ["Outgoing sessions", meta["sessions-outgoing"]], ["Incoming sessions", meta["sessions-incoming"]],
                ["Retrieved sessions", meta["sessions-retrieved"]],
            ]), renderSessions(id));
        } else {
            box.append(el("h3", { text: "Metadata" }), kv(Object.entries(meta)));
        }
        return box;
    }

    function renderCxlFeatures(id) {
        const known = state.details[id] && state.details[id].features;
        const box = el("div", { class: "fw-subsection" }, el("h3", { text: "CXL features" }));
        const button = el("button", { class: "fw-btn fw-btn-secondary", type: "button", text: "Read the feature table", "data-action": "features" });
        /* a configuration-scope fwctl RPC: polkit org.livefw.daemon1.fwctl-configuration */
        setButton(button, adminReason());
        button.addEventListener("click", () => readFeatures(id));
        box.append(button);
        if (known) {
            const table = el("table", { class: "fw-table fw-compact" },
                el("thead", {}, el("tr", {}, ...["#", "UUID", "Name", "Get size", "Set size", "Changeable", "Effects", "Set needs scope"].map(t => el("th", { text: t })))));
            const tbody = el("tbody");
            for (const feature of known) {
                const effects = typeof feature.effects === "number" ? "0x" + feature.effects.toString(16) : feature.effects;
                tbody.append(el("tr", {}, ...[feature.index, feature.uuid, feature.name, feature["get-size"],
                    feature["set-size"], feature.changeable ? "yes" : "no", effects,
                    feature["set-scope"]].map(v => el("td", { text: v === undefined || v === null ? "" : String(v) }))));
            }
            table.append(tbody);
            box.append(table);
        }
        return box;
    }

    function renderSessions(id) {
        const sessions = state.details[id] && state.details[id].sessions;
        const box = el("div", { class: "fw-subsection" }, el("h3", { text: "Live-update sessions" }));
        const button = el("button", { class: "fw-btn fw-btn-secondary", type: "button", text: "List sessions", "data-action": "sessions" });
        button.addEventListener("click", () => listSessions(id));
        box.append(button);
        if (sessions) {
            if (sessions.length === 0)
                box.append(el("p", { class: "fw-muted", text: "No sessions." }));
            else
                box.append(el("table", { class: "fw-table fw-compact" },
                    el("thead", {}, el("tr", {}, ...["Name", "State", "Owner uid", "Label"].map(t => el("th", { text: t })))),
                    el("tbody", {}, ...sessions.map(([name, sessionState, owner, label]) => el("tr", {},
                        el("td", { text: name }), el("td", { text: sessionState }),
                        el("td", { text: String(owner) }), el("td", { text: label }))))));
        }
        return box;
    }

    function toggleDetails(id) {
        state.expanded[id] = !state.expanded[id];
        renderDevices();
    }

    async function readFeatures(id) {
        await runBusy("Reading the CXL feature table", async () => {
            const out = await cockpit.spawn(["livefw", "fwctl", "features", id, "--json"],
                { superuser: "try", err: "message" });
            const parsed = JSON.parse(out);
            const features = Array.isArray(parsed) ? parsed : (parsed.features || []);
            state.details[id] = Object.assign({}, state.details[id], { features });
        });
    }

    async function listSessions(id) {
        await runBusy("Listing live-update sessions", async () => {
            const path = DEVICES_PATH + "/" + id;
            const [sessions] = await livefwd.call(path, LIVEUPDATE, "ListSessions", [], { type: "" });
            state.details[id] = Object.assign({}, state.details[id], { sessions });
        });
    }

    /* ------------------------------------------------------------ activation */

    function activationConsequences(props, host) {
        const flags = props.Flags || [];
        const lines = [];
        lines.push(props.Name + ": " + (props.Version || "?") + " \u2192 " + (props.VersionPending || "the staged image"));
        if (flags.includes("cpu-rendezvous"))
            lines.push("The platform stops every CPU together (a rendezvous) while the firmware switches " +
                "images: the whole machine pauses, including its workloads and interrupts.");
        if (flags.includes("may-reset-cpu"))
            lines.push("The platform may reset CPUs during the activation.");
        if (props.Plugin === "pfru")
            lines.push("ACPI PFRU " + ((props.Metadata || {})["update-type"] || "") + ": the firmware quiesces " +
                "the system and switches its runtime image; this cannot be undone, only replaced by another update.");
        if (props.Plugin === "lfa")
            lines.push("Arm Live Firmware Activation: the firmware (TF-A) activates the pending image through " +
                "the kernel's LFA driver; there is no way back to the previous image without another update.");
        if (!flags.includes("cpu-rendezvous") && !flags.includes("may-reset-cpu"))
            lines.push("The device does not report a CPU rendezvous or CPU reset.");
        if (host && host.Tainted !== undefined)
            lines.push("Kernel taint mask now: " + host.Tainted + (host.Tainted === 0 ? " (not tainted)" : "") +
                ". livefw does not know of a taint from this activation; the history and the taint mask " +
                "afterwards show what happened.");
        return lines;
    }

    async function confirmActivate(id) {
        const device = deviceById(id);
        if (!device)
            return;
        const props = device.ifaces[DEVICE];
        let host = null;
        try {
            const [reply] = await livefwd.call(MANAGER_PATH, MANAGER, "GetHostState", [], { type: "" });
            host = unvariantDict(reply);
        } catch (error) {
            console.warn("GetHostState", error);
        }
        const dialog = $("confirm");
        $("confirm-title").textContent = "Activate firmware on " + props.Name + "?";
        const body = $("confirm-body");
        body.textContent = "";
        for (const line of activationConsequences(props, host))
            body.append(el("li", { text: line }));
        dialog.returnValue = "";
        dialog.showModal();
        $("confirm-ok").focus();
        dialog.addEventListener("close", function onClose() {
            dialog.removeEventListener("close", onClose);
            if (dialog.returnValue === "ok")
                activate(id);
        });
    }

    async function activate(id) {
        await runBusy("Activation", async () => {
            const [entry] = await livefwd.call(MANAGER_PATH, MANAGER, "Activate", [id, {}],
                Object.assign({ type: "sa{sv}" }, LONG_CALL));
            const result = unvariantDict(entry);
            showResult("Activated " + result.DeviceName + ": " + result.VersionOld + " \u2192 " +
                result.VersionNew + " (" + result.State + ")");
            await loadHistory();
        });
    }

    async function cancelUpdate(id) {
        await runBusy("Cancel", async () => {
            await livefwd.call(MANAGER_PATH, MANAGER, "Cancel", [id, {}], Object.assign({ type: "sa{sv}" }, LONG_CALL));
            await loadHistory();
        });
    }

    function showResult(text) {
        $("install-result").textContent = text;
    }

    /* --------------------------------------------------------------- install */

    function safeName(name) {
        const cleaned = (name || "").replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[.]+/, "").slice(0, 100);
        return cleaned || "upload.bin";
    }

    async function installFile() {
        const input = $("install-file");
        const file = input.files && input.files[0];
        if (!file) {
            reportError("Install", new Error("choose a capsule or cabinet file first"));
            return;
        }
        if (file.size === 0 || file.size > MAX_UPLOAD) {
            reportError("Install", new Error(file.name + " is " + file.size + " bytes: livefwd takes 1 byte to " + MAX_UPLOAD + " bytes"));
            return;
        }
        const device = $("install-device").value;
        await runBusy("Install", async () => {
            showResult("Uploading " + file.name + " \u2026");
            const data = new Uint8Array(await file.arrayBuffer());
            /* a directory only the bridge's user (root with administrative access) can enter */
            const dir = (await cockpit.spawn(["mktemp", "-d", "/tmp/livefw-cockpit.XXXXXXXX"],
                { superuser: "try", err: "message" })).trim();
            if (!/^\/tmp\/livefw-cockpit\.[A-Za-z0-9]{8}$/.test(dir))
                throw new Error("mktemp returned an unexpected path: " + dir);
            try {
                const path = dir + "/" + safeName(file.name);
                await cockpit.file(path, { binary: true, superuser: "try" }).replace(data);
                const argv = ["livefw", "install", path];
                if (device)
                    argv.push(device);
                if ($("install-allow-older").checked)
                    argv.push("--allow-older");
                if ($("install-allow-reinstall").checked)
                    argv.push("--allow-reinstall");
                argv.push("--json");
                showResult("Installing " + file.name + " \u2026");
                const out = await cockpit.spawn(argv, { superuser: "try", err: "message" });
                const entry = JSON.parse(out);
                showResult("Installed " + file.name + " on " + entry.DeviceName + ": " + entry.VersionOld +
                    " \u2192 " + entry.VersionNew + " (" + entry.State + (entry.Reason ? ": " + entry.Reason : "") + ")");
                input.value = "";
            } catch (error) {
                showResult("");
                throw error;
            } finally {
                cockpit.spawn(["rm", "-rf", "--", dir], { superuser: "try", err: "message" })
                    .catch(error => console.warn("removing " + dir, error));
            }
            await loadHistory();
        });
    }

    function renderInstall() {
        const select = $("install-device");
        const chosen = select.value;
        select.textContent = "";
        select.append(el("option", { value: "", text: "found from the file" }));
        for (const props of deviceList().filter(p => (p.Flags || []).includes("updatable")))
            select.append(el("option", { value: props.Id, text: props.Name }));
        select.value = Array.from(select.options).some(o => o.value === chosen) ? chosen : "";
        setButton($("install"), adminReason(), $("install-why"));
        $("refresh").disabled = state.busy;
    }

    /* --------------------------------------------------------------- updates */

    let upgrades = null; /* [{device, releases}] | null until checked */
    let upgradeNotes = [];

    async function checkUpdates() {
        await runBusy("Checking for updates", async () => {
            const found = [];
            const notes = [];
            for (const props of deviceList().filter(p => (p.Flags || []).includes("updatable"))) {
                try {
                    const [releases] = await livefwd.call(MANAGER_PATH, MANAGER, "GetUpgrades", [props.Id], { type: "s" });
                    found.push({ device: props, releases: releases.map(unvariantDict) });
                } catch (error) {
                    notes.push(props.Name + ": " + describeError(error));
                }
            }
            upgrades = found;
            upgradeNotes = notes;
        });
    }

    async function updateDevice(id) {
        await runBusy("Update", async () => {
            const out = await cockpit.spawn(["livefw", "update", id, "--json"], { superuser: "try", err: "message" });
            let text = out.trim();
            try {
                const parsed = JSON.parse(out);
                const entries = Array.isArray(parsed) ? parsed : [parsed];
                text = entries.map(e => (e.DeviceName || id) + ": " + e.VersionOld + " \u2192 " + e.VersionNew + " (" + e.State + ")").join("; ");
            } catch (_e) {
                /* plain text */
            }
            showResult("Updated " + text);
            await loadHistory();
            upgrades = null;
        });
        if (upgrades === null)
            await checkUpdates();
    }

    function renderUpdates() {
        const body = $("updates").querySelector("tbody");
        body.textContent = "";
        const notes = $("updates-none");
        notes.textContent = "";
        setButton($("check-updates"), state.busy ? "another operation of this page is running" : null);
        if (upgrades === null)
            return;
        for (const { device, releases } of upgrades) {
            const release = releases[0];
            if (!release)
                continue;
            const button = el("button", { class: "fw-btn fw-btn-primary", type: "button", text: "Update", "data-action": "update" });
            setButton(button, adminReason());
            button.addEventListener("click", () => updateDevice(device.Id));
            body.append(el("tr", { "data-id": device.Id },
                el("td", { text: device.Name }), el("td", { text: device.Version }),
                el("td", { text: release.Version }),
                el("td", { text: (release.Name || "") + (release.Summary ? ": " + release.Summary : "") + (release.Trusted ? "" : " (not trusted)") }),
                el("td", { text: release.RemoteId || "" }), el("td", {}, button)));
        }
        for (const note of upgradeNotes)
            notes.append(el("li", { text: note }));
        if (upgrades.length === 0 && upgradeNotes.length === 0)
            notes.append(el("li", { text: "No updatable devices." }));
    }

    /* --------------------------------------------------------------- history */

    async function loadHistory() {
        try {
            const [entries] = await livefwd.call(MANAGER_PATH, MANAGER, "GetHistory",
                [{ limit: { t: "u", v: HISTORY_LIMIT } }], { type: "a{sv}" });
            state.history = entries.map(unvariantDict);
        } catch (error) {
            reportError("Reading the history", error);
        }
        renderHistory();
        renderDevices();
    }

    let historyTimer = null;
    function loadHistorySoon() {
        if (historyTimer)
            return;
        historyTimer = window.setTimeout(() => {
            historyTimer = null;
            loadHistory();
        }, 300);
    }

    function fillSelect(select, values, allText) {
        const chosen = select.value;
        select.textContent = "";
        select.append(el("option", { value: "", text: allText }));
        for (const [value, text] of values)
            select.append(el("option", { value, text }));
        select.value = Array.from(select.options).some(o => o.value === chosen) ? chosen : "";
    }

    function renderHistory() {
        const devices = new Map();
        for (const entry of state.history)
            devices.set(entry.DeviceId, entry.DeviceName || entry.DeviceId);
        fillSelect($("history-device"), Array.from(devices.entries()), "all devices");
        const results = Array.from(new Set(state.history.map(e => e.State))).sort();
        fillSelect($("history-result"), results.map(r => [r, r]), "all results");
        const byDevice = $("history-device").value;
        const byResult = $("history-result").value;
        const body = $("history").querySelector("tbody");
        body.textContent = "";
        const shown = state.history.filter(e => (!byDevice || e.DeviceId === byDevice) && (!byResult || e.State === byResult));
        for (const entry of shown) {
            const created = entry.Created ? new Date(entry.Created * 1000).toLocaleString() : "";
            body.append(el("tr", { "data-id": entry.Id, "data-device": entry.DeviceId, "data-state": entry.State },
                el("td", { text: created }), el("td", { text: entry.DeviceName }), el("td", { text: entry.Kind }),
                el("td", { text: entry.VersionOld }), el("td", { text: entry.VersionNew }),
                el("td", { class: "fw-state-" + entry.State, text: entry.State }), el("td", { text: entry.Reason }),
                el("td", { text: entry.CallerUid === undefined ? "" : String(entry.CallerUid) })));
        }
        show($("history-empty"), shown.length === 0);
    }

    /* ------------------------------------------------------------- telemetry */

    function telemetryDevices() {
        return Object.values(state.devices).filter(d => d.ifaces[TELEMETRY] && d.ifaces[DEVICE]);
    }

    function decodeBytes(base64) {
        if (!base64)
            return "";
        const binary = window.atob(base64);
        const bytes = new Uint8Array(binary.length);
        for (let i = 0; i < binary.length; i++)
            bytes[i] = binary.charCodeAt(i);
        /* the firmware writes text records; unused buffer space is NUL */
        return new TextDecoder("utf-8", { fatal: false }).decode(bytes).replace(/\u0000/g, "");
    }

    function appendTelemetry(text, lost) {
        const log = $("telemetry-log");
        let current = log.textContent;
        if (lost)
            current += "\u2026 records were overwritten before they could be read \u2026\n";
        current += text;
        if (current.length > TELEMETRY_MAX_CHARS)
            current = current.slice(current.length - TELEMETRY_MAX_CHARS);
        log.textContent = current;
        log.scrollTop = log.scrollHeight;
    }

    async function readTelemetry() {
        const id = $("telemetry-device").value;
        if (!id)
            return;
        const path = DEVICES_PATH + "/" + id;
        state.telemetry.device = id;
        try {
            const [info] = await livefwd.call(path, TELEMETRY, "GetDataInfo", [], { type: "" });
            const data = unvariantDict(info);
            const [bytes, cursor] = await livefwd.call(path, TELEMETRY, "Read", [], { type: "" });
            $("telemetry-log").textContent = "";
            appendTelemetry(decodeBytes(bytes), false);
            state.telemetry.cursor = cursor;
            $("telemetry-info").textContent = "Buffer " + data["max-data-size"] + " bytes, " +
                (data.started ? "" : "service not started, ") + "rollovers " + data["rollover-count"] +
                ", resets " + data["reset-count"] + ", log " + data["log-type"] + ".";
        } catch (error) {
            /* shown in the section: without access this is expected, not an alert */
            $("telemetry-log").textContent = "";
            $("telemetry-info").textContent = "Cannot read the telemetry log: " + describeError(error);
            $("telemetry-follow").checked = false;
            followTelemetry();
        }
    }

    /* PFRT has no change signal (the firmware appends without telling the kernel), so
     * following is what `livefw telemetry --follow` does: ReadSince(cursor) every 2 s,
     * and at once when the device's state changes (an install or activation writes
     * records). */
    async function pollTelemetry() {
        const t = state.telemetry;
        if (t.reading || t.cursor === null || !$("telemetry-follow").checked)
            return;
        t.reading = true;
        try {
            const path = DEVICES_PATH + "/" + t.device;
            const [bytes, cursor, lost] = await livefwd.call(path, TELEMETRY, "ReadSince", [t.cursor], { type: "t" });
            t.cursor = cursor;
            const text = decodeBytes(bytes);
            if (text || lost)
                appendTelemetry(text, lost);
        } catch (error) {
            reportError("Following the telemetry log", error);
            $("telemetry-follow").checked = false;
            followTelemetry();
        } finally {
            t.reading = false;
        }
    }

    function followTelemetry() {
        const t = state.telemetry;
        if (t.timer) {
            window.clearInterval(t.timer);
            t.timer = null;
        }
        if ($("telemetry-follow").checked) {
            if (t.cursor === null)
                readTelemetry();
            t.timer = window.setInterval(pollTelemetry, TELEMETRY_INTERVAL);
        }
    }

    async function applyTelemetrySettings() {
        const id = $("telemetry-device").value;
        if (!id)
            return;
        const level = $("telemetry-level").value;
        const type = $("telemetry-type").value;
        await runBusy("Changing the telemetry settings", async () => {
            await livefwd.call(DEVICES_PATH + "/" + id, TELEMETRY, "SetLogInfo",
                [{ level: { t: "s", v: level }, type: { t: "s", v: type } }], { type: "a{sv}" });
            /* from now on the selects follow the LogLevel/LogType properties again */
            delete $("telemetry-level").dataset.edited;
            delete $("telemetry-type").dataset.edited;
        });
        await readTelemetry();
    }

    function renderTelemetry() {
        const select = $("telemetry-device");
        const chosen = select.value;
        const devices = telemetryDevices();
        select.textContent = "";
        for (const device of devices)
            select.append(el("option", { value: device.ifaces[DEVICE].Id, text: device.ifaces[DEVICE].Name }));
        if (Array.from(select.options).some(o => o.value === chosen))
            select.value = chosen;
        const current = devices.find(d => d.ifaces[DEVICE].Id === select.value);
        if (current) {
            const level = $("telemetry-level");
            const type = $("telemetry-type");
            /* a choice not applied yet stays; otherwise show the firmware's setting */
            if (!level.dataset.edited && current.ifaces[TELEMETRY].LogLevel)
                level.value = current.ifaces[TELEMETRY].LogLevel;
            if (!type.dataset.edited && current.ifaces[TELEMETRY].LogType)
                type.value = current.ifaces[TELEMETRY].LogType;
        }
        setButton($("telemetry-apply"), devices.length ? adminReason() : "no device has firmware telemetry");
        $("telemetry-follow").disabled = devices.length === 0;
    }

    /* ------------------------------------------------------ maintenance window */

    function usecToText(usec) {
        if (!usec || usec === 0 || usec >= Number.MAX_SAFE_INTEGER)
            return "never";
        return new Date(usec / 1000).toLocaleString();
    }

    /* what OnCalendar= may hold: systemd.time(7) calendar events, one line, no '=' or
     * '[' that could smuggle another setting into the drop-in; systemd-analyze checks
     * the syntax itself before anything is written. */
    function calendarProblem(value) {
        if (!value)
            return "enter a calendar expression, e.g. Sun *-*-* 02:00:00";
        if (value.length > 128)
            return "at most 128 characters";
        if (!/^[A-Za-z0-9 ,.:*\/~+_-]+$/.test(value) || value.startsWith("-"))
            return "only letters, digits, spaces and , . : * / ~ + _ - (systemd.time(7))";
        return null;
    }

    async function loadTimer() {
        const t = state.timer;
        try {
            const [timerPath] = await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "LoadUnit", [config.timer], { type: "s" });
            const [servicePath] = await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "LoadUnit", [config.service], { type: "s" });
            t.timerPath = timerPath;
            t.servicePath = servicePath;
            const [unit] = await systemd.call(timerPath, PROPERTIES, "GetAll", [SYSTEMD_UNIT], { type: "s" });
            const [timer] = await systemd.call(timerPath, PROPERTIES, "GetAll", [SYSTEMD_TIMER], { type: "s" });
            const [service] = await systemd.call(servicePath, PROPERTIES, "GetAll", [SYSTEMD_SERVICE], { type: "s" });
            const [serviceUnit] = await systemd.call(servicePath, PROPERTIES, "GetAll", [SYSTEMD_UNIT], { type: "s" });
            t.props = Object.assign(unvariantDict(unit), unvariantDict(timer));
            t.service = Object.assign(unvariantDict(serviceUnit), unvariantDict(service));
            t.error = null;
        } catch (error) {
            t.error = describeError(error);
        }
        renderTimer();
        loadJournal();
    }

    function base64ToHex(base64) {
        const binary = window.atob(base64 || "");
        let hex = "";
        for (let i = 0; i < binary.length; i++)
            hex += binary.charCodeAt(i).toString(16).padStart(2, "0");
        return hex;
    }

    /* what the last run of the service wrote (one line per device), from the journal by
     * the run's invocation id */
    async function loadJournal() {
        const box = $("timer-journal");
        const invocation = base64ToHex(state.timer.service.InvocationID);
        if (!state.timer.service.ExecMainExitTimestamp || !/^[0-9a-f]{32}$/.test(invocation)) {
            show(box, false);
            return;
        }
        if (state.timer.journalFor === invocation)
            return;
        state.timer.journalFor = invocation;
        let text;
        try {
            text = await cockpit.spawn(["journalctl", "--no-pager", "--output=cat", "--lines=50",
                "_SYSTEMD_INVOCATION_ID=" + invocation], { superuser: "try", err: "message" });
            text = text.trim() && !text.startsWith("-- No entries --")
                ? text : "The journal has no lines from the last run (invocation " + invocation + ").";
        } catch (error) {
            text = "Cannot read the journal: " + describeError(error);
        }
        box.textContent = text;
        show(box, true);
    }

    function renderTimer() {
        const t = state.timer;
        const dl = $("timer");
        dl.textContent = "";
        const toggle = $("timer-toggle");
        const calendarInput = $("timer-calendar");
        if (t.error) {
            dl.append(el("dt", { text: "systemd" }), el("dd", { text: t.error }));
            setButton(toggle, "systemd is not reachable", $("timer-why"));
            setButton($("timer-save"), "systemd is not reachable");
            setButton($("timer-reset"), "systemd is not reachable");
            return;
        }
        const p = t.props;
        const s = t.service;
        if (!p.Id)
            return;
        const enabled = p.UnitFileState === "enabled" || p.UnitFileState === "enabled-runtime";
        const calendars = (p.TimersCalendar || []).map(([, spec]) => spec);
        let last = "not run yet";
        if (s.ExecMainExitTimestamp) {
            const status = s.ExecMainStatus;
            const meaning = status === 0 ? "every pending device was activated"
                : status === 7 ? "nothing was pending"
                    : status === 1 ? "at least one activation failed"
                        : status === 69 ? "livefwd was not reachable" : "exit status " + status;
            last = usecToText(s.ExecMainExitTimestamp) + ": " + (s.Result || "") + " (" + meaning + ")";
        }
        const rows = [
            ["Timer", p.Id], ["Enabled", enabled ? "yes" : "no (" + (p.UnitFileState || "unknown") + ")"],
            ["Active", p.ActiveState], ["Window (OnCalendar=)", calendars.join("; ") || "none"],
            ["Next run", p.ActiveState === "active" ? usecToText(p.NextElapseUSecRealtime) : "not scheduled (timer inactive)"],
            ["Last run", usecToText(p.LastTriggerUSec)], ["Last result", last],
            ["Drop-ins", (p.DropInPaths || []).join(", ") || "none"],
        ];
        for (const [key, value] of rows)
            dl.append(el("dt", { text: key }), el("dd", { "data-key": key, text: value }));
        if (document.activeElement !== calendarInput && !calendarInput.dataset.edited)
            calendarInput.value = calendars[0] || "";
        toggle.textContent = enabled ? "Disable" : "Enable";
        toggle.dataset.enabled = enabled ? "true" : "false";
        const reason = adminReason();
        setButton(toggle, reason, $("timer-why"));
        setButton($("timer-save"), reason);
        setButton($("timer-reset"), reason);
    }

    async function toggleTimer() {
        const enable = $("timer-toggle").dataset.enabled !== "true";
        await runBusy(enable ? "Enabling the timer" : "Disabling the timer", async () => {
            if (enable) {
                await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "EnableUnitFiles", [[config.timer], false, false], { type: "asbb" });
                await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "Reload", [], { type: "" });
                await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "StartUnit", [config.timer, "replace"], { type: "ss" });
            } else {
                await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "StopUnit", [config.timer, "replace"], { type: "ss" });
                await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "DisableUnitFiles", [[config.timer], false], { type: "asb" });
                await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "Reload", [], { type: "" });
            }
        });
        await loadTimer();
    }

    function dropInPath() {
        return config.unit_dir + "/" + config.timer + ".d/window.conf";
    }

    async function saveWindow() {
        const input = $("timer-calendar");
        const value = input.value.trim();
        const problem = calendarProblem(value);
        if (problem) {
            reportError("Maintenance window", new Error(problem));
            return;
        }
        await runBusy("Changing the maintenance window", async () => {
            try {
                await cockpit.spawn(["systemd-analyze", "calendar", value], { err: "message" });
            } catch (error) {
                throw new Error("systemd does not accept \u201c" + value + "\u201d: " + (error.message || "").trim());
            }
            const path = dropInPath();
            await cockpit.spawn(["mkdir", "-p", "--", path.slice(0, path.lastIndexOf("/"))], { superuser: "try", err: "message" });
            /* the empty assignment clears the unit's own window (README, Scheduling updates) */
            const text = "# Written by the Firmware page of the web console (Cockpit).\n" +
                "[Timer]\nOnCalendar=\nOnCalendar=" + value + "\n";
            await cockpit.file(path, { superuser: "try" }).replace(text);
            await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "Reload", [], { type: "" });
            delete input.dataset.edited;
        });
        await loadTimer();
    }

    async function resetWindow() {
        await runBusy("Restoring the default window", async () => {
            await cockpit.file(dropInPath(), { superuser: "try" }).replace(null);
            await systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "Reload", [], { type: "" });
            delete $("timer-calendar").dataset.edited;
        });
        await loadTimer();
    }

    function watchSystemd() {
        systemd.call(SYSTEMD_PATH, SYSTEMD_MANAGER, "Subscribe", [], { type: "" })
            .catch(error => console.info("systemd Subscribe", error));
        systemd.subscribe({ interface: PROPERTIES, member: "PropertiesChanged" }, (path) => {
            if (path === state.timer.timerPath || path === state.timer.servicePath)
                loadTimer();
        });
        systemd.subscribe({ interface: SYSTEMD_MANAGER, member: "Reloading" }, (_path, _iface, _signal, args) => {
            if (args && args[0] === false)
                loadTimer();
        });
    }

    /* --------------------------------------------------------------- manager */

    function renderManager() {
        const m = state.manager;
        $("daemon-version").textContent = m.DaemonVersion ? "livefwd " + m.DaemonVersion : "";
        show($("simulated"), m.Simulated === true);
        const active = m.Status && m.Status !== "idle";
        show($("progress"), !!active);
        $("progress-status").textContent = active ? (STATUS_WORDS[m.Status] || m.Status) : "";
        $("progress-percent").textContent = active ? (m.Percentage || 0) + "%" : "";
        $("progress-bar").value = m.Percentage || 0;
    }

    function renderAll() {
        renderManager();
        renderDevices();
        renderInstall();
        renderUpdates();
        renderTelemetry();
        renderTimer();
    }

    function setOffline(message) {
        const box = $("offline");
        box.textContent = message || "";
        show(box, !!message);
    }

    async function loadObjects() {
        try {
            const [objects] = await livefwd.call(MANAGER_PATH, OBJECT_MANAGER, "GetManagedObjects", [], { type: "" });
            const devices = {};
            for (const [path, ifaces] of Object.entries(objects)) {
                if (path === MANAGER_PATH) {
                    state.manager = unvariantDict(ifaces[MANAGER] || {});
                    continue;
                }
                const entry = { ifaces: {} };
                for (const [iface, props] of Object.entries(ifaces))
                    entry.ifaces[iface] = unvariantDict(props);
                devices[path] = entry;
            }
            state.devices = devices;
            if (!state.manager.DaemonVersion) {
                const [props] = await livefwd.call(MANAGER_PATH, PROPERTIES, "GetAll", [MANAGER], { type: "s" });
                state.manager = unvariantDict(props);
            }
            setOffline(null);
        } catch (error) {
            state.devices = {};
            setOffline("Cannot read livefwd's devices: " + describeError(error));
        }
        renderAll();
        await loadHistory();
    }

    function watchLivefwd() {
        livefwd.subscribe({ interface: OBJECT_MANAGER, member: "InterfacesAdded" }, (_p, _i, _s, args) => {
            const [path, ifaces] = args;
            const entry = state.devices[path] || { ifaces: {} };
            for (const [iface, props] of Object.entries(ifaces))
                entry.ifaces[iface] = unvariantDict(props);
            if (path !== MANAGER_PATH)
                state.devices[path] = entry;
            renderAll();
        });
        livefwd.subscribe({ interface: OBJECT_MANAGER, member: "InterfacesRemoved" }, (_p, _i, _s, args) => {
            const [path, ifaces] = args;
            const entry = state.devices[path];
            if (!entry)
                return;
            for (const iface of ifaces)
                delete entry.ifaces[iface];
            if (Object.keys(entry.ifaces).length === 0)
                delete state.devices[path];
            renderAll();
        });
        livefwd.subscribe({ interface: PROPERTIES, member: "PropertiesChanged", path_namespace: MANAGER_PATH },
            (path, _i, _s, args) => {
                const [iface, changed] = args;
                const values = unvariantDict(changed);
                if (path === MANAGER_PATH && iface === MANAGER) {
                    Object.assign(state.manager, values);
                    renderManager();
                    return;
                }
                const entry = state.devices[path];
                if (!entry)
                    return;
                entry.ifaces[iface] = Object.assign(entry.ifaces[iface] || {}, values);
                if (iface === DEVICE && ("Version" in values || "VersionPending" in values || "UpdateState" in values || "Flags" in values))
                    loadHistorySoon();
                if (iface === DEVICE && entry.ifaces[TELEMETRY] && $("telemetry-follow").checked)
                    pollTelemetry();
                renderAll();
            });
        /* livefwd restarted (or started by D-Bus activation): read everything again */
        livefwd.addEventListener("owner", (_event, owner) => {
            if (owner)
                loadObjects();
            else if (owner === null)
                setOffline("livefwd is not running; the page shows its devices again when it starts.");
        });
    }

    function init() {
        $("refresh").addEventListener("click", () => runBusy("Refresh", async () => {
            await livefwd.call(MANAGER_PATH, MANAGER, "Refresh", [], Object.assign({ type: "" }, LONG_CALL));
            await loadObjects();
        }));
        $("install").addEventListener("click", installFile);
        $("check-updates").addEventListener("click", checkUpdates);
        $("history-device").addEventListener("change", renderHistory);
        $("history-result").addEventListener("change", renderHistory);
        $("telemetry-device").addEventListener("change", () => {
            state.telemetry.cursor = null;
            readTelemetry();
        });
        $("telemetry-apply").addEventListener("click", applyTelemetrySettings);
        for (const id of ["telemetry-level", "telemetry-type"])
            $(id).addEventListener("change", () => {
                $(id).dataset.edited = "1";
            });
        $("telemetry-follow").addEventListener("change", followTelemetry);
        $("timer-toggle").addEventListener("click", toggleTimer);
        $("timer-save").addEventListener("click", saveWindow);
        $("timer-reset").addEventListener("click", resetWindow);
        $("timer-calendar").addEventListener("input", () => {
            $("timer-calendar").dataset.edited = "1";
        });
        permission.addEventListener("changed", applyPermission);
        applyPermission();
        watchLivefwd();
        watchSystemd();
        loadObjects().then(() => {
            if (telemetryDevices().length)
                readTelemetry();
        });
        loadTimer();
        document.body.dataset.ready = "true";
    }

    init();
}());
