"""Where BLiMP's 67 paradigm files are: $SIMSCALE_DATA/blimp, else the cache, downloaded once.

    folder = blimp_files.folder()     # downloads into cache_dir()/blimp when neither exists

The files are the dataset's public ones (`data/<paradigm>.jsonl` of github.com/alexwarstadt/blimp),
fetched from `base_url()` ($SIMSCALE_BLIMP_URL overrides it) into a temporary folder that is renamed
into place once all 67 have arrived, so the cache never holds a partial copy.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import urllib.request

from simscale import tmpfiles
from simscale.data.cache import cache_dir
from simscale.data.download import reachable

BLIMP_URL = "https://raw.githubusercontent.com/alexwarstadt/blimp/master/data/"

PARADIGMS = (
    "adjunct_island", "anaphor_gender_agreement", "anaphor_number_agreement", "animate_subject_passive",
    "animate_subject_trans", "causative", "complex_NP_island",
    "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction", "determiner_noun_agreement_1",
    "determiner_noun_agreement_2", "determiner_noun_agreement_irregular_1",
    "determiner_noun_agreement_irregular_2", "determiner_noun_agreement_with_adj_2",
    "determiner_noun_agreement_with_adj_irregular_1", "determiner_noun_agreement_with_adj_irregular_2",
    "determiner_noun_agreement_with_adjective_1", "distractor_agreement_relational_noun",
    "distractor_agreement_relative_clause", "drop_argument", "ellipsis_n_bar_1", "ellipsis_n_bar_2",
    "existential_there_object_raising", "existential_there_quantifiers_1",
    "existential_there_quantifiers_2", "existential_there_subject_raising", "expletive_it_object_raising",
    "inchoative", "intransitive", "irregular_past_participle_adjectives", "irregular_past_participle_verbs",
    "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
    "left_branch_island_echo_question", "left_branch_island_simple_question",
    "matrix_question_npi_licensor_present", "npi_present_1", "npi_present_2", "only_npi_licensor_present",
    "only_npi_scope", "passive_1", "passive_2", "principle_A_c_command", "principle_A_case_1",
    "principle_A_case_2", "principle_A_domain_1", "principle_A_domain_2", "principle_A_domain_3",
    "principle_A_reconstruction", "regular_plural_subject_verb_agreement_1",
    "regular_plural_subject_verb_agreement_2", "sentential_negation_npi_licensor_present",
    "sentential_negation_npi_scope", "sentential_subject_island", "superlative_quantifiers_1",
    "superlative_quantifiers_2", "tough_vs_raising_1", "tough_vs_raising_2", "transitive", "wh_island",
    "wh_questions_object_gap", "wh_questions_subject_gap", "wh_questions_subject_gap_long_distance",
    "wh_vs_that_no_gap", "wh_vs_that_no_gap_long_distance", "wh_vs_that_with_gap",
    "wh_vs_that_with_gap_long_distance",
)


def base_url() -> str:
    """The folder URL the paradigm files are fetched from ($SIMSCALE_BLIMP_URL, else BLIMP_URL)."""
    url = os.environ.get("SIMSCALE_BLIMP_URL") or BLIMP_URL
    return url if url.endswith("/") else url + "/"


def local() -> pathlib.Path | None:
    """$SIMSCALE_DATA/blimp or the cached download, when it is a folder; nothing is fetched."""
    data = os.environ.get("SIMSCALE_DATA")
    candidates = ([pathlib.Path(data) / "blimp"] if data else []) + [cache_dir() / "blimp"]
    return next((p for p in candidates if p.is_dir()), None)


def downloadable() -> bool:
    """Whether the first paradigm file answers within a few seconds (for `auto` choices)."""
    return reachable(base_url() + PARADIGMS[0] + ".jsonl")


def folder() -> pathlib.Path:
    """The local folder, else the cache's, downloading the 67 files into it once (with progress)."""
    return local() or _download(cache_dir() / "blimp")


def _download(final: pathlib.Path) -> pathlib.Path:
    from tqdm import tqdm

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmpfiles.temp_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    url = base_url()
    try:
        for name in tqdm(PARADIGMS, desc=f"downloading BLiMP from {url}", unit="file",
                         disable=None, file=sys.stderr):
            with urllib.request.urlopen(url + name + ".jsonl", timeout=30) as r:
                blob = r.read()
            lines = [json.loads(line) for line in blob.decode("utf-8").splitlines() if line.strip()]
            if not lines or "sentence_good" not in lines[0]:
                raise ValueError(f"{url}{name}.jsonl holds no BLiMP pairs")
            (tmp / f"{name}.jsonl").write_bytes(blob)
    except (OSError, ValueError) as e:  # URLError is an OSError; bad JSON or UTF-8 a ValueError
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileNotFoundError(
            f"BLiMP is not in $SIMSCALE_DATA/blimp nor {final}, and downloading it from {url} failed "
            f"({e}). Offline, put the 67 <paradigm>.jsonl files of github.com/alexwarstadt/blimp "
            "(data/) in a folder and pass it with --blimp DIR, or set SIMSCALE_DATA to a folder "
            "holding blimp/") from None
    try:
        tmp.rename(final)
    except OSError:  # another process put its copy in place first
        shutil.rmtree(tmp, ignore_errors=True)
    return final
