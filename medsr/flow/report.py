"""``medsr audit``: the HTML/JSON report for an archive, with or without the original series."""
from __future__ import annotations

from pathlib import Path


from .pipeline import RestoreOptions, restore_pixels
from ..archive import read_archive
from ..audit import AuditResult, write_report
from .audit import audit_against_reference, bicubic_restore, rescale_stack
from ..errors import OutputError
from ..models import REGISTRY, ModelRef, find_by_sha256


def report_for_archive(archive: Path, out_dir: Path, *, reference: str | Path | None = None,
                       include_phi: bool = False, force: bool = False) -> tuple[Path, Path]:
    """Write report.json + report.html into ``out_dir``.

    With ``reference`` (the original series) the archive is restored in memory exactly as
    ``medsr restore`` would and measured against it, with image panels. Without it the
    stored archive-time audit is reported, and panels show bicubic vs restored only.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    if (out_dir / "report.html").exists() and not force:
        raise OutputError("already holds a report (use --force to replace it)", path=out_dir)
    data = read_archive(archive)
    info = data.info
    restored, method, loaded, device, _ = restore_pixels(data, RestoreOptions())
    if reference is not None:
        from .restoring import restore_arithmetic

        audit_dict, images = audit_against_reference(Path(reference), data, restored, return_images=True,
                                                     method=method, model_id=loaded.model_id if loaded else method,
                                                     ensemble=loaded.ensemble if loaded else 1,
                                                     arithmetic=restore_arithmetic(method, device))
    else:
        audit_dict = info.audit or {}
        vr = info.value_range
        images = {"restored": rescale_stack(restored, data.slope, data.intercept),
                  "bicubic": rescale_stack(bicubic_restore(data.lowres, info.rows, info.cols, info.dtype, vr),
                                      data.slope, data.intercept)}
    audit = AuditResult.from_dict(audit_dict)
    ratios = dict(audit.ratios)
    ratios["file"] = info.ratio
    prov = dict(audit.provenance)
    prov.update({"archive": archive.name, "archive_created": info.created, "model_id": info.model_id,
                 "method": info.method, "operator": info.operator,
                 "measured_against": "reference series given on the command line" if reference else
                 "original at archive time (stored audit)"})
    card = _model_card_summary(info.model)
    if card:
        prov["model_card"] = card
    audit = AuditResult(data_range=audit.data_range, fg_threshold=audit.fg_threshold, methods=audit.methods,
                        ratios=ratios, provenance=prov)
    phi = None
    if include_phi and data.headers is not None:
        h = data.header(0)
        phi = {"PatientName": str(h.get("PatientName", "")), "PatientID": str(h.get("PatientID", ""))}
    return write_report(audit, images, out_dir, phi=phi, floor=(info.audit or {}).get("floor"),
                        budget=(info.audit or {}).get("budget"))


def _model_card_summary(model: ModelRef | None) -> str:
    """``name (kind): summary`` from the card data of the shipped weights an archive recorded (found by sha256,
    so an archive of older weights gets their card, else by name); "" for weights the registry does not ship."""
    if model is None:
        return ""
    entry = find_by_sha256(model.sha256) or REGISTRY.get(model.name)
    if entry is None:
        return ""
    return f"{entry.name} ({entry.kind})" + (f": {entry.card_data.summary}" if entry.card_data else "")
