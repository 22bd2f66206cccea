"""Trust domains (design.md section 10, docs/security.md): who may act on the shared gateway.

Endpoints belong to operators. Certificates, diagnostics, logs and customer data are each
operator's own (the gateway wires one certificate store and one bundle scope per operator); what
acts on the whole gateway, a firmware update (it replaces and restarts the process every
operator's endpoints run in), is reserved to ``[gateway] maintenance_operator``. This is the one
check the version layers call before such an action.
"""

from __future__ import annotations

import logging

from bess_gateway.endpoint.link import Context

log = logging.getLogger("bess_gateway.security")


def may_maintain(ctx: Context, action: str) -> bool:
    """Whether the endpoint's CSMS may order ``action`` on the whole gateway; a refusal is
    logged (security log). The log names the requester's operator only, never the maintainer."""
    if ctx.maintainer:
        return True
    log.warning("%s: %s refused: operator %r is not the gateway's maintenance operator",
                ctx.endpoint_id, action, ctx.cfg.trust_domain)
    return False
