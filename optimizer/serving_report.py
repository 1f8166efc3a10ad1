"""The report's "Serving" section: memory, cold start and cost of the chosen candidate, from `extra.serving`."""

from __future__ import annotations


def serving_lines(serving: dict | None) -> list[str]:
    if not serving:
        return []
    lines = ["", "## Serving", ""]
    if serving.get("measured"):
        mib = 2**20
        peak = serving["peak_rss_bytes"]
        lines.append(
            f"- peak RSS **{peak / mib:,.1f} MiB** ({peak:,} bytes), measured in a fresh runtime process: onnxruntime "
            f"session made with the runtime's options, then one run of {serving['how']}"
        )
        lines.append(f"- session creation **{serving['session_create_s']:.3f} s** (measured; imports {serving['import_s']:.3f} s)")
        lines.append(
            f"- recommended memory **{serving['recommended_memory_mb']} MB**: {serving['memory_rule']}; the target "
            f"allows {serving['target_memory_bytes'] / mib:,.0f} MiB"
        )
        if serving["limit_batch"] > serving["batch"]:
            lines.append(
                f"- the request limits admit {serving['limit_batch']:,} rows; extrapolated linearly from the runs at "
                f"{max(1, serving['batch'] // 2)} and {serving['batch']} rows, that takes "
                f"~{serving['peak_rss_at_limit_bytes'] / mib:,.0f} MiB: SLIMSERVE_MAX_REQUEST_BATCH={serving['batch']} holds "
                "requests to what was measured"
            )
        for arch, cost in serving.get("cost", {}).items():
            lines.append(
                f"- cost on {cost['target']} {arch}: **${cost['per_million_usd']:.4f} per million requests** at {cost['memory_mb']} MB "
                f"({cost['vcpus']:g} vCPU: p50 scaled to {cost['duration_ms']:.3f} ms, billed {cost['billed_ms']:g} ms; prices "
                f"{cost['price_source']}, recorded {cost['price_recorded']})"
                + ("; the duration measured here on x86_64 is assumed, arm64 was not measured" if arch != "x86_64" else "")
            )
    else:
        lines.append(f"- serving memory not measured: {serving.get('why', '?')}")
    cold = serving.get("cold_start", {})
    if cold:
        verdict = "within" if cold["within_init"] else "over"
        lines.append(
            f"- cold start ~{cold['total_s']:.2f} s, {verdict} the {cold['init_limit_s']:g} s init: base {cold['base_s']:g} s + download "
            f"{cold['download_s']:g} s ({cold['download']}) + inflate {cold['inflate_s']:g} s + session creation "
            f"{cold['session_create_s']:g} s ({cold['session_create']})"
        )
        if cold.get("beyond_init"):
            lines.append(f"- past the init limit: {cold['beyond_init']}")
    return lines
