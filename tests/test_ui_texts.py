"""The panel's words: the Russian labels are the product's own (SPEC.md)."""

from __future__ import annotations

import subprocess
import sys

from kiosk.ui.texts import Texts


def test_russian_words_from_the_spec() -> None:
    ru = Texts("ru")
    assert (ru["line"], ru["number"], ru["route"]) == ("Линия", "Номер", "Маршрут")
    assert (ru["call"], ru["hold"], ru["connect"], ru["pickup"]) == ("Позвонить", "Удержание", "Подключить",
                                                                     "Перехват")
    assert [ru[k].replace("\n", " ") for k in ("transfer_quick", "transfer_consult", "transfer_confirm")] == [
        "Перевод: Быстрый", "Перевод: С консультацией", "Перевод: Подтвердить"]
    assert ru["conference"] == "Конференция" and ru["record_start"].startswith("Запись")
    assert ru.state("on hold") == "на удержании" and ru.state("something new") == "something new"
    assert ru.refused("hold", "no call selected") == "Удержание: no call selected"


def test_every_word_exists_in_both_languages_and_unknown_falls_back_to_english() -> None:
    from kiosk.ui import texts

    assert texts._EN.keys() == texts._RU.keys()
    assert Texts("de").language == "en" and Texts("de")["call"] == "Call"


def test_the_headless_side_never_loads_kivy() -> None:
    # What the headless unit, `kiosk ctl` and the other tests load: no Kivy (it is loaded with the panel).
    code = ("import sys, kiosk.cli, kiosk.control, kiosk.ui.display, kiosk.ui.frontend, kiosk.ui.texts; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kivy'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
