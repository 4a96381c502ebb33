"""medsr routes for Orthanc, loaded by the orthanc-python plugin ("PythonScript" in Orthanc's config).

This script only adapts Orthanc's Python callbacks to ``medsr.pacs.service`` (the routes) and
``medsr.pacs.orthanc_access`` (``CallableAccess``), where all the logic lives. The
orthanc-python plugin is AGPL-3.0: if you distribute Orthanc with this script or offer it
as a network service, the AGPL's source-disclosure terms apply to this script; keep it
thin and free of site secrets. See docs/orthanc.md.

Routes (all under /medsr, all JSON except the report):
  POST /medsr/series/{orthanc-series-id}/archive   body: {"delete_original", "min_psnr", "model", ...}
  GET  /medsr/archives                              list
  GET  /medsr/archives/{archive-id}                 info + stored audit (?verify=true)
  GET  /medsr/archives/{archive-id}/report          HTML audit report
  POST /medsr/archives/{archive-id}/restore         new derived series in the same study
  GET  /medsr/jobs/{job-id}                         state of a queued/running/finished job
POSTs wait for their job (up to "timeout" seconds, default Medsr.WaitTimeout) or, with
{"wait": false} in the body or a "Prefer: respond-async" header, answer 202 {"job_id"} at
once (Orthanc passes query arguments to plugins for GET requests only).
"""
import json
import sys
import traceback

import orthanc

if not getattr(sys, "argv", None) or sys.argv == [""]:
    sys.argv = ["Orthanc"]  # the embedded interpreter has no argv; some libraries read it

SERVICE = None
try:  # first, before pydicom loads it: bind pyjpegls' CharLS to itself, not to DCMTK's (see load_jpegls)
    from medsr.codec.base import load_jpegls

    load_jpegls()
except Exception as e:  # near-lossless archives then fail with a clear error instead of crashing Orthanc
    orthanc.LogWarning(f"medsr: JPEG-LS not isolated from DCMTK's CharLS: {e}")
try:
    from medsr.pacs.orthanc_access import CallableAccess
    from medsr.pacs.service import service_from_orthanc

    SERVICE = service_from_orthanc(
        orthanc.GetConfiguration(),
        CallableAccess(get=orthanc.RestApiGet, post=orthanc.RestApiPost, delete=orthanc.RestApiDelete),
        log=orthanc.LogWarning)
    orthanc.LogWarning(f"medsr plugin ready; archive store: {SERVICE.store.root}")
except Exception:  # keep Orthanc running; every /medsr route answers 503 with the reason
    LOAD_ERROR = traceback.format_exc()
    orthanc.LogError("medsr plugin could not start (routes will answer 503):\n" + LOAD_ERROR)
    LOAD_ERROR = LOAD_ERROR.strip().splitlines()[-1][:300]


def _send_status(output, status, text):
    try:
        output.SendHttpStatus(status, text, len(text.encode("utf-8")))  # orthanc-python 4.0: (code, str, size)
    except TypeError:
        output.SendHttpStatus(status, text.encode("utf-8"))  # newer orthanc-python: (code, bytes)


def on_rest(output, uri, **request):
    try:
        if SERVICE is None:
            status, body, ctype, allow = 503, json.dumps({"error": f"medsr plugin not loaded: {LOAD_ERROR}",
                                                          "status": 503}), "application/json", ""
        else:
            r = SERVICE.handle(request.get("method", "GET"), uri, request.get("get"), request.get("body"),
                               request.get("headers"))
            status, body, ctype, allow = r.status, r.body, r.content_type, r.allow
        if status == 200:
            output.AnswerBuffer(body, ctype)
        elif status == 405:
            output.SendMethodNotAllowed(allow or "GET")
        else:
            output.SetHttpHeader("Content-Type", ctype)
            _send_status(output, status, body)
    except Exception:  # never let an exception reach Orthanc's plugin engine
        orthanc.LogError("medsr route failed:\n" + traceback.format_exc())
        try:
            _send_status(output, 500, json.dumps({"error": "internal error in the medsr plugin (see Orthanc log)",
                                                  "status": 500}))
        except Exception:  # the answer was already (partly) sent: nothing more to tell the client
            orthanc.LogWarning("medsr: the error answer could not be sent (an answer was already started)")


orthanc.RegisterRestCallback("/medsr", on_rest)
orthanc.RegisterRestCallback("/medsr/.*", on_rest)
