"""Review decisions (events, undo, concurrency), the queue's order and counts, and its routes."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select
from support import PASSWORD, login

from app.config import Settings
from app.db import get_engine
from app.models import CurationRun, Image, ReviewEvent, ReviewState, Role, Species, User
from app.services import auth, review
from app.services.demo_data import generate_demo_dataset
from app.services.imports import import_folder
from app.services.review import Decision, NothingToUndo, QueueView

HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("review-demo") / "photos"
    generate_demo_dataset(root, per_species=6, image_size=64, seed=3)
    return root


@pytest.fixture
def loaded(db: Session, migrated: Settings, demo: Path) -> Session:
    """48 photos; every third flagged, with scores that tie on purpose; some unscored."""
    import_folder(db, demo, migrated.data_dir)
    run = CurationRun(extractor="test", params={}, stats={})
    db.add(run)
    db.flush()
    for i, image in enumerate(db.exec(select(Image).order_by(col(Image.id))).all()):
        image.flagged = i % 3 == 0
        image.anomaly_score = None if i % 5 == 4 else round((i * 7 % 10) / 10, 1)
        image.curation_run_id = run.id
        db.add(image)
    db.commit()
    return db


def _user(db: Session, name: str, role: Role = Role.curator) -> User:
    user = auth.create_user(db, name, PASSWORD, role)
    db.commit()
    return user


def _image(db: Session, *, flagged: bool = True) -> Image:
    return db.exec(select(Image).where(Image.flagged == flagged).order_by(col(Image.id))).first()


def _consistent(db: Session, image_id: int) -> str:
    """The cached state equals what the events add up to; returns it."""
    db.expire_all()
    state = db.get(Image, image_id).review_state
    assert review.derived_state(db, image_id) == state
    return state


def test_keep_exclude_undo_round_trip(loaded: Session) -> None:
    db = loaded
    ada = _user(db, "ada")
    image = _image(db)
    steps = [
        (Decision.keep, ReviewState.kept),
        (Decision.exclude, ReviewState.excluded),
        (Decision.undo, ReviewState.kept),
        (Decision.undo, ReviewState.unreviewed),
    ]
    for decision, expected in steps:
        outcome = review.decide(db, image.id, decision, user_id=ada.id)
        assert outcome.state == expected
        assert _consistent(db, image.id) == expected
    with pytest.raises(NothingToUndo):
        review.decide(db, image.id, Decision.undo, user_id=ada.id)
    assert _consistent(db, image.id) == ReviewState.unreviewed

    events = db.exec(
        select(ReviewEvent).where(ReviewEvent.image_id == image.id).order_by(col(ReviewEvent.id))
    ).all()
    assert [e.decision for e in events] == ["keep", "exclude", "undo", "undo"]
    assert [e.previous_state for e in events] == ["unreviewed", "kept", "excluded", "kept"]
    assert {e.user_id for e in events} == {ada.id}
    assert {e.curation_run_id for e in events} == {image.curation_run_id}
    assert all(e.created_at.tzinfo is not None for e in events)
    # Nothing on disk was touched.
    assert (Path(db.get(Image, image.id).path)).name


def test_bulk_decisions_and_bulk_undo(loaded: Session) -> None:
    db = loaded
    ada = _user(db, "ada")
    ids = [i.id for i in db.exec(select(Image).order_by(col(Image.id)).limit(5)).all()]
    outcomes = review.decide_many(db, ids, Decision.exclude, user_id=ada.id)
    assert [o.image_id for o in outcomes] == ids
    assert all(_consistent(db, i) == ReviewState.excluded for i in ids)
    review.decide(db, ids[0], Decision.keep, user_id=ada.id)
    review.decide_many(db, ids, Decision.undo, user_id=ada.id)
    assert _consistent(db, ids[0]) == ReviewState.excluded
    assert all(_consistent(db, i) == ReviewState.unreviewed for i in ids[1:])
    with pytest.raises(review.ReviewError):
        review.decide_many(db, [], Decision.keep, user_id=ada.id)
    with pytest.raises(review.ImageNotFound):
        review.decide_many(db, [ids[0], 999_999], Decision.keep, user_id=ada.id)
    assert _consistent(db, ids[0]) == ReviewState.excluded  # the failed bulk changed nothing


def test_concurrent_decisions_are_both_recorded(loaded: Session, migrated: Settings) -> None:
    db = loaded
    ada, bob = _user(db, "ada"), _user(db, "bob")
    image = _image(db)
    engine = get_engine(migrated.db_url)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def reviewer(user_id: int, decision: Decision) -> None:
        try:
            with Session(engine, expire_on_commit=False) as session:
                barrier.wait(timeout=10)
                review.decide(
                    session, image.id, decision, user_id=user_id, seen=ReviewState.unreviewed
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=reviewer, args=(ada.id, Decision.keep)),
        threading.Thread(target=reviewer, args=(bob.id, Decision.exclude)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    entries = review.history(db, image.id)
    assert sorted(e.username for e in entries) == ["ada", "bob"]
    last = entries[-1]
    # The later decision wins, and it replaced the earlier one (whose state it saw as previous).
    assert _consistent(db, image.id) == {"keep": "kept", "exclude": "excluded"}[last.decision]
    assert last.previous_state == {"keep": "kept", "exclude": "excluded"}[entries[0].decision]
    assert entries[0].previous_state == ReviewState.unreviewed


def test_a_stale_decision_says_whom_it_replaced(loaded: Session) -> None:
    db = loaded
    ada, bob = _user(db, "ada"), _user(db, "bob")
    image = _image(db)
    first = review.decide(db, image.id, "keep", user_id=ada.id, seen=ReviewState.unreviewed)
    assert first.replaced is None
    second = review.decide(db, image.id, "exclude", user_id=bob.id, seen=ReviewState.unreviewed)
    assert second.replaced is not None
    assert (second.replaced.username, second.replaced.decision) == ("ada", "keep")
    assert _consistent(db, image.id) == ReviewState.excluded


def _expected_order(db: Session, species_id: int | None = None) -> list[int]:
    query = select(Image).where(Image.review_state == ReviewState.unreviewed)
    if species_id is not None:
        query = query.where(Image.species_id == species_id)
    images = db.exec(query).all()
    key = review.NO_SCORE
    ordered = sorted(
        images,
        key=lambda i: (
            not i.flagged,
            -(i.anomaly_score if i.anomaly_score is not None else key),
            i.id,
        ),
    )
    return [i.id for i in ordered]


def test_queue_is_flagged_first_by_score_and_pages_without_gaps(loaded: Session) -> None:
    db = loaded
    seen: list[int] = []
    after = None
    while True:
        page = review.queue_page(db, after=after, page_size=5)
        seen += [item.id for item in page.items]
        after = page.next_cursor
        if after is None:
            break
    assert seen == _expected_order(db)
    species_id = db.exec(select(Species.id).order_by(col(Species.id))).first()
    page = review.queue_page(db, species_id=species_id, page_size=100)
    assert [i.id for i in page.items] == _expected_order(db, species_id)
    with pytest.raises(review.ReviewError):
        review.queue_page(db, after="nonsense")


def test_counts_follow_decisions(loaded: Session) -> None:
    db = loaded
    ada = _user(db, "ada")
    before = review.counts(db)
    assert before.pending == 48 and before.flagged == 16 and before.kept == before.excluded == 0
    flagged = _image(db)
    review.decide(db, flagged.id, "exclude", user_id=ada.id)
    review.decide(db, _image(db, flagged=False).id, "keep", user_id=ada.id)
    after = review.counts(db)
    assert (after.pending, after.flagged, after.kept, after.excluded) == (46, 15, 1, 1)
    per_species = {c.species_id: c for c in review.species_counts(db)}
    mine = per_species[flagged.species_id]
    assert mine.excluded == 1 and mine.pending + mine.kept + mine.excluded == 6
    assert review.counts(db, flagged.species_id) == mine
    # The excluded photo is in the excluded view, and out of the pending one.
    excluded = review.queue_page(db, view=QueueView.excluded).items
    assert [i.id for i in excluded] == [flagged.id]


# --- routes --------------------------------------------------------------------------------


@pytest.fixture
def ada(client: TestClient, make_user: Callable) -> tuple[TestClient, str]:
    make_user("ada")
    return client, login(client, "ada", PASSWORD)


def _card_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<li class="review-card[^"]*" id="card-(\d+)"', html)]


def test_review_pages_and_htmx_decisions(ada: tuple[TestClient, str], loaded: Session) -> None:
    client, csrf = ada
    page = client.get("/review")
    assert page.status_code == 200
    assert _card_ids(page.text) == _expected_order(loaded)[: review.PAGE_SIZE]
    assert 'id="review-species"' in page.text and "Show more photos" in page.text

    first = _card_ids(page.text)[0]
    image = loaded.get(Image, first)
    response = client.post(
        f"/review/images/{first}",
        data={"decision": "exclude", "seen": "unreviewed", "view": "pending"},
        headers={**HX, "X-CSRF-Token": csrf},
    )
    assert response.status_code == 200
    assert 'id="card-' not in response.text  # the card leaves the pending queue
    assert re.search(r'<aside id="review-species"[^>]*hx-swap-oob="true"', response.text)
    assert re.search(r'<nav id="review-tabs"[^>]*hx-swap-oob="true"', response.text)
    assert "Excluded photo" in response.text and "to undo" in response.text
    assert _consistent(loaded, first) == ReviewState.excluded

    species_page = client.get(f"/review/species/{image.species_id}?view=excluded")
    assert _card_ids(species_page.text) == [first]
    assert "No curation run has covered this species yet" in species_page.text

    undo = client.post(
        f"/review/images/{first}",
        data={"decision": "undo", "view": "pending"},
        headers={**HX, "X-CSRF-Token": csrf},
    )
    assert undo.status_code == 200 and undo.headers["HX-Trigger"] == "review-refresh"
    assert _consistent(loaded, first) == ReviewState.unreviewed
    again = client.post(
        f"/review/images/{first}", data={"decision": "undo"}, headers={**HX, "X-CSRF-Token": csrf}
    )
    assert again.status_code == 409

    ids = _card_ids(page.text)[1:4]
    bulk = client.post(
        "/review/bulk",
        data={"decision": "keep", "image_ids": ids},
        headers={**HX, "X-CSRF-Token": csrf},
    )
    assert bulk.status_code == 200 and "Kept 3 photos" in bulk.text
    assert all(_consistent(loaded, i) == ReviewState.kept for i in ids)

    fragment = client.get("/review?view=kept", headers={**HX, "HX-Target": "review-queue"})
    assert fragment.text.lstrip().startswith('<section id="review-queue"')
    assert sorted(_card_ids(fragment.text)) == sorted(ids)

    more = client.get("/review/more", params={"after": review.queue_page(loaded).next_cursor})
    assert _card_ids(more.text) == _expected_order(loaded)[review.PAGE_SIZE : 2 * review.PAGE_SIZE]
    assert client.get("/review/more", params={"after": "bad"}).status_code == 422
    assert client.get("/review/species/999999").status_code == 404
    history = client.get(f"/review/images/{first}/history")
    assert history.text.count("<li>") == 2


def test_viewers_see_the_queue_but_cannot_decide(
    client: TestClient, make_user: Callable, loaded: Session
) -> None:
    make_user("vic", Role.viewer)
    csrf = login(client, "vic", PASSWORD)
    page = client.get("/review")
    assert page.status_code == 200 and "deciding needs the curator role" in page.text
    assert 'class="review-actions"' not in page.text
    image = _image(loaded)
    refused = client.post(
        f"/review/images/{image.id}", data={"decision": "keep"}, headers={"X-CSRF-Token": csrf}
    )
    assert refused.status_code == 403
    assert _consistent(loaded, image.id) == ReviewState.unreviewed


def test_decisions_need_the_csrf_token(ada: tuple[TestClient, str], loaded: Session) -> None:
    client, _ = ada
    image = _image(loaded)
    response = client.post(f"/review/images/{image.id}", data={"decision": "keep"}, headers=HX)
    assert response.status_code == 403
    assert loaded.exec(select(ReviewEvent)).all() == []


def test_species_page_draws_the_dbscan_picture(
    ada: tuple[TestClient, str], loaded: Session
) -> None:
    client, _ = ada
    species_id = loaded.exec(select(Species.id).order_by(col(Species.id))).first()
    images = loaded.exec(select(Image).where(Image.species_id == species_id)).all()
    projection = [[img.id, float(n), float(n % 3), n == 0] for n, img in enumerate(images)]
    other = {"eps": 1.0, "min_samples": 2, "k_distance": [1.0], "projection": []}
    loaded.add(CurationRun(extractor="old", stats={"species": {str(species_id): other}}))
    loaded.add(
        CurationRun(
            extractor="colour-texture",
            params={},
            stats={
                "species": {
                    str(species_id): {
                        "eps": 0.42,
                        "min_samples": 3,
                        "k_distance": [0.1, 0.2, 0.25, 0.3, 0.9],
                        "projection": projection,
                    }
                }
            },
        )
    )
    loaded.add(CurationRun(extractor="other-species", stats={"species": {"999": other}}))
    loaded.commit()
    page = client.get(f"/review/species/{species_id}").text
    assert "colour-texture" in page and "eps 0.42" in page
    assert page.count('class="plot-point is-flagged"') == 1
    assert page.count('class="plot-point"') == len(images) - 1
    assert 'class="plot-line" points="' in page and 'class="plot-eps"' in page
    assert f"{len(images)} photos; 1 flagged as anomalies" in page


def test_dbscan_picture_reads_the_curation_engines_shape(loaded: Session) -> None:
    from app.services import dbscan_plot

    ids = loaded.exec(select(Species.id).order_by(col(Species.id))).all()
    assert dbscan_plot.picture(loaded, ids[0]) is None
    curve = {
        "status": "clustered", "eps": 2.0, "min_samples": 3, "images": 50,
        "k_distance": [0.5, 1.0, 4.0], "k_distance_ranks": [0, 25, 49],
        "projection": [[1, 0.0, 0.0, False, 0, 0.2], [2, 1.0, 1.0, True, -1, 3.1], ["bad"]],
    }  # fmt: skip
    skipped = {"status": "skipped", "reason": "2 photos, fewer than min_samples 5"}
    loaded.add(
        CurationRun(extractor="x", stats={"species": {str(ids[0]): curve, str(ids[1]): skipped}})
    )
    loaded.commit()
    picture = dbscan_plot.picture(loaded, ids[0])
    assert [p.image_id for p in picture.points] == [1, 2] and picture.flagged == 1
    assert picture.curve_count == 50 and picture.eps_y is not None
    xs = [float(pair.split(",")[0]) for pair in picture.curve.split()]
    assert xs[0] == picture.left and xs[-1] == picture.right  # ranks span the whole box
    assert dbscan_plot.picture(loaded, ids[1]).skipped == skipped["reason"]
