"""The storefront in a real browser: headless Chromium through WebDriver.

    storefront.py --url URL --email E --password P --sku SKU --admin-email A
                  --admin-password Q --shots DIR

A customer logs in, finds SKU in the catalog (searching for SKU: the
product's name must contain it), orders one, sees CONFIRMED,
finds the order among their orders and cancels it; then the admin creates
a product, restocks it and lists stuck orders. A screenshot of each step
goes to DIR (NN-step.png). Exit 0 when every step saw what it expected;
otherwise the failing step is printed and the exit status is 1.
"""
import argparse
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

# Chromium on a machine without a network: no lookups, no sync, no
# component updates, or it hangs on them.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
]


class Steps:
    def __init__(self, driver, shots):
        self.d = driver
        self.shots = shots
        self.n = 0

    def shot(self, name):
        self.n += 1
        path = os.path.join(self.shots, "%02d-%s.png" % (self.n, name))
        self.d.save_screenshot(path)
        print("screenshot", path, flush=True)

    def wait(self, cond, what, timeout=30):
        try:
            # A table the page rebuilds may leave an element stale between
            # finding and reading it: look again.
            return WebDriverWait(self.d, timeout, ignored_exceptions=(
                NoSuchElementException, StaleElementReferenceException)).until(cond)
        except Exception:
            self.shot("failed")
            msg = self.d.find_element(By.ID, "message").text
            raise SystemExit("step failed: %s (page says: %r)" % (what, msg))

    def text_is(self, elem_id, text):
        return lambda d: d.find_element(By.ID, elem_id).text == text

    def fill(self, elem_id, value):
        e = self.d.find_element(By.ID, elem_id)
        e.clear()
        e.send_keys(value)

    def login(self, email, password):
        self.fill("login-email", email)
        self.fill("login-password", password)
        self.d.find_element(By.ID, "login-submit").click()
        self.wait(lambda d: email in d.find_element(By.ID, "whoami").text, "logged in as " + email)


def main():
    ap = argparse.ArgumentParser()
    for a in ("url", "email", "password", "sku", "admin-email", "admin-password", "shots"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = ap.parse_args()
    os.makedirs(args.shots, exist_ok=True)

    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for f in CHROMIUM_FLAGS:
        opts.add_argument(f)
    profile = tempfile.mkdtemp(prefix="shop-chromium-")
    opts.add_argument("--user-data-dir=" + profile)
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=opts)
    driver.set_page_load_timeout(30)
    s = Steps(driver, args.shots)
    try:
        driver.get(args.url + "/")
        s.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#products tr.product"), "catalog shown")
        s.shot("catalog")

        s.fill("search", args.sku)
        driver.find_element(By.ID, "search-submit").click()
        row_sel = '#products tr.product[data-sku="%s"]' % args.sku
        s.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#products tr.product")) == 1
               and d.find_elements(By.CSS_SELECTOR, row_sel), "search finds " + args.sku)
        s.shot("search")

        s.login(args.email, args.password)
        s.wait(EC.visibility_of_element_located((By.ID, "place-order")), "checkout shown")
        s.shot("logged-in")

        qty = driver.find_element(By.CSS_SELECTOR, row_sel + " input.qty")
        qty.clear()
        qty.send_keys("1")
        driver.find_element(By.ID, "place-order").click()
        s.wait(lambda d: d.find_element(By.ID, "order-status").text in ("PENDING", "CONFIRMED"),
               "order placed")
        s.wait(s.text_is("order-status", "CONFIRMED"), "order CONFIRMED")
        order_id = driver.find_element(By.ID, "order-id").text
        s.shot("confirmed")

        mine = '#orders tr.order[data-id="%s"]' % order_id
        s.wait(lambda d: d.find_elements(By.CSS_SELECTOR, mine), "order among past orders")
        s.wait(lambda d: d.find_element(By.CSS_SELECTOR, mine + " .status").text == "CONFIRMED",
               "past order CONFIRMED")
        s.shot("orders")

        driver.find_element(By.CSS_SELECTOR, mine + " button.cancel").click()
        s.wait(lambda d: d.find_element(By.CSS_SELECTOR, mine + " .status").text == "CANCELLED",
               "order CANCELLED")
        s.shot("cancelled")

        driver.find_element(By.ID, "logout").click()
        s.wait(EC.visibility_of_element_located((By.ID, "login-submit")), "logged out")
        s.login(args.admin_email, args.admin_password)
        s.wait(EC.visibility_of_element_located((By.ID, "create-product")), "admin view shown")
        s.shot("admin")

        new_sku = args.sku + "-ADM"
        s.fill("new-sku", new_sku)
        s.fill("new-name", "Browser product " + new_sku)
        s.fill("new-description", "made in the admin view")
        s.fill("search", new_sku)
        driver.find_element(By.ID, "create-product").click()
        s.wait(lambda d: d.find_elements(By.CSS_SELECTOR, '#products tr.product[data-sku="%s"]'
                                         % new_sku), "created product listed")
        stock = '#products tr.product[data-sku="%s"] td:nth-child(4)' % new_sku
        s.wait(lambda d: d.find_element(By.CSS_SELECTOR, stock).text == "10", "initial stock 10")
        s.shot("product-created")

        s.fill("restock-quantity", "5")
        driver.find_element(By.ID, "restock").click()
        # The catalog's stock comes from the inventory worker's
        # StockLevelChanged, after the restock's own consistency token: a
        # person presses Search again to see it.

        def restocked(d):
            if d.find_element(By.CSS_SELECTOR, stock).text == "15":
                return True
            d.find_element(By.ID, "search-submit").click()
            return False
        s.wait(restocked, "restocked to 15")
        s.shot("restocked")

        s.fill("stuck-age", "0")
        driver.find_element(By.ID, "stuck-list").click()
        s.wait(lambda d: "stuck order(s)" in d.find_element(By.ID, "message").text,
               "stuck orders listed")
        s.shot("stuck")
        print("storefront: all steps passed", flush=True)
        return 0
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
