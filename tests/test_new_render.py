"""The dashboard's "New render" page (/new, api/static/new_render.js) in headless chromium, against
the real Temporal and S3 servers and in-process workers (preview backend): files uploaded from
the form, the estimate as the form changes, field-named errors beside their field, submit
through /run onto the render's page."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from longtalk.testing import KEY_A, api_settings
from tests.api_server import running_api_with_fleet
from tests.media import EXAMPLES
from tests.test_dashboard import browser, shoot, wait_for  # noqa: F401 - the browser fixture

pytestmark = pytest.mark.timeout(300)
EP = "new-ep"


@pytest.fixture(scope="module")
def own_settings(settings):
    return dataclasses.replace(api_settings(settings, gpu_prices="*=1.8"), api_endpoint_ids=EP)


@pytest.fixture(scope="module")
async def api(own_settings, temporal_client, store, workers):
    async with running_api_with_fleet(own_settings, temporal_client, store, workers) as base:
        yield base


async def test_start_a_render_from_the_form(api, browser, media, store):  # noqa: F811
    await asyncio.to_thread(new_render, api, browser, media, store)


def new_render(api, d, media, store):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    d.get(f"{api}/login?key={KEY_A}")
    wait_for(lambda: d.find_elements(By.ID, "renders"), 30, 0.2, "the renders page")
    d.find_element(By.LINK_TEXT, "New render").click()
    wait_for(lambda: d.find_elements(By.ID, "new-form"), 30, 0.2, "the form")

    d.find_element(By.ID, "file-image").send_keys(str(EXAMPLES / "portrait.png"))
    d.find_element(By.ID, "file-audio").send_keys(str(media["speech"]))
    for name, value in (("width", "128"), ("height", "128")):
        d.find_element(By.ID, name).send_keys(value)
    est = wait_for(lambda: (lambda t: t if "Windows" in t and "3 in 1 chain" in t else None)(
        d.find_element(By.ID, "est").text), 60, 0.3, "the estimate")
    assert "Cost" in est and "GPU time" in est
    # the estimate follows the form: a cap on frames shortens it
    d.find_element(By.ID, "max_frame").send_keys("80")
    wait_for(lambda: "1 in 1 chain" in d.find_element(By.ID, "est").text, 60, 0.3, "the estimate to follow max_frame")
    d.find_element(By.ID, "max_frame").clear()

    # a bad value: the API's error beside its field, nothing started
    d.find_element(By.ID, "width").clear()
    d.find_element(By.ID, "width").send_keys("100")
    msg = wait_for(lambda: d.find_element(By.ID, "err-width").text, 60, 0.3, "the width error")
    assert msg.startswith("width:")
    # a second speaker whose track the API refuses (a link-local address): the error goes beside
    # that track, from the estimate and from the start button alike
    d.find_element(By.ID, "width").clear()
    d.find_element(By.ID, "width").send_keys("128")
    wait_for(lambda: not d.find_element(By.ID, "err-width").text, 60, 0.3, "the width error to go")
    Select(d.find_element(By.ID, "person_count")).select_by_value("multi")
    d.find_element(By.CSS_SELECTOR, 'input[name="src-audio_2"][value="url"]').click()
    d.find_element(By.ID, "url-audio_2").send_keys("http://169.254.169.254/talk.wav")
    wait_for(lambda: d.find_element(By.ID, "err-audio_2").text.startswith("wav_url_2:"), 60, 0.3,
             "the second track's error from the estimate")
    d.execute_script("document.getElementById('err-audio_2').textContent = ''")
    d.find_element(By.ID, "start").click()
    wait_for(lambda: d.find_element(By.ID, "err-audio_2").text.startswith("wav_url_2:"), 60, 0.3,
             "the second track's error from /run")
    assert "/new" in d.current_url
    shoot(d, "new-render-error")
    Select(d.find_element(By.ID, "person_count")).select_by_value("single")
    wait_for(lambda: "3 in 1 chain" in d.find_element(By.ID, "est").text, 60, 0.3, "the estimate again")
    # the optional name and labels: a bad label's error beside the labels; the render carries both
    d.find_element(By.ID, "name").send_keys("Form render")
    d.find_element(By.ID, "labels").send_keys("from-form, not ok")
    msg = wait_for(lambda: d.find_element(By.ID, "err-labels").text, 60, 0.3, "the labels error")
    assert msg.startswith("labels[1]:"), msg
    d.find_element(By.ID, "labels").clear()
    d.find_element(By.ID, "labels").send_keys("from-form")
    wait_for(lambda: not d.find_element(By.ID, "err-labels").text, 60, 0.3, "the labels error to go")
    shoot(d, "new-render")

    d.find_element(By.ID, "start").click()
    wait_for(lambda: "/renders/" in d.current_url, 60, 0.3, "the render's page")
    rid = d.current_url.rsplit("/", 1)[1]
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, ".head .status").text == "completed", 120, 0.5,
             "the render to complete")
    assert d.find_element(By.ID, "render-name").text == "Form render from-form"
    plan = store.get_json(f"renders/{rid}/plan.json")
    assert (plan["windows"], len(plan["chains"])) == (3, 1)
    staged = [k for k in store.list(f"renders/{rid}/inputs/")]
    assert any(k.rsplit("/", 1)[1].startswith("image-") for k in staged)  # the upload reached the bucket
