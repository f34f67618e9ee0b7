"""Generated ORU^R01 messages for the HL7 properties: built by the simulator from a drawn seed, 1–2
patients with 1–2 orders of 1–3 observations each, in versions 2.3.1, 2.5 and 2.5.1."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from hypothesis import strategies as st

from services.core.domain.model import PARIS
from services.simulator.oru import build_oru_r01, random_order, random_patient

# names with the delimiters and escape character of ER7, and accented letters
NAME_TEXT = st.text(alphabet=st.sampled_from("ABCÉÈÎÔÜÇéèàçœ -'|^&~\\abcxyz0123"), min_size=1, max_size=20)


@st.composite
def oru_messages(
    draw: st.DrawFn,
    *,
    labs: Sequence[str] = ("LAB01",),
    without_ins: Sequence[float] = (0.2,),
    names: bool = False,
    crlf: bool = False,
) -> bytes:
    """One message. `labs`, `without_ins` (the share of patients without an INS): drawn from; `names`:
    birth and given names drawn from NAME_TEXT (else the simulator's); `crlf`: segments sometimes end
    with CR LF."""
    seed = draw(st.integers(0, 2**32 - 1))
    version = draw(st.sampled_from(("2.3.1", "2.5", "2.5.1")))
    patients, orders, observations = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
    drawn_names = draw(st.none() | st.tuples(NAME_TEXT, NAME_TEXT)) if names else None
    lab = draw(st.sampled_from(labs))
    share_without_ins = draw(st.sampled_from(without_ins))
    line_ends = draw(st.booleans()) if crlf else False
    rng = random.Random(seed)
    result_time = datetime(2024, 1, 15, 10, tzinfo=PARIS) - timedelta(minutes=rng.randrange(1000))
    content = []
    for _ in range(patients):
        patient = random_patient(rng, without_ins=share_without_ins)
        if drawn_names is not None:
            patient = dataclasses.replace(patient, birth_name=drawn_names[0], given_name=drawn_names[1])
        content.append((patient, [random_order(rng, result_time, observations=observations)
                                  for _ in range(orders)]))
    return build_oru_r01(lab, f"C{seed}", content, version=version, crlf=line_ends)
